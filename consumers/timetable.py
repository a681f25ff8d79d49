"""Keeping the class sessions made from the timetable in step with it when it changes while the system
runs (a dashboard edit, `rollcall db load-config`): writers and dashboards read the timetable from
PostgreSQL on every use, only the sessions made ahead of time from the old timetable need tidying."""

from __future__ import annotations

import datetime as dt

from consumers.sessions import materialise_timetable

# Sessions not started yet, never opened and without any sighting, whose slot is gone or now says another
# room or time: made from the timetable as it was (an edit or an import changed it since).
_STALE_SESSIONS_SQL = """
DELETE FROM class_session cs
WHERE cs.state = 'scheduled' AND cs.starts_at > now() AND cs.opened_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM attendance a WHERE a.session_id = cs.id)
  AND NOT EXISTS (SELECT 1 FROM presence_track t WHERE t.session_id = cs.id)
  AND (cs.slot_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM timetable_slot s WHERE s.id = cs.slot_id AND s.room_id = cs.room_id
                      AND s.course_id = cs.course_id
                      AND (cs.starts_at AT TIME ZONE s.timezone)::time = s.start_time
                      AND (cs.ends_at AT TIME ZONE s.timezone)::time = s.end_time
                      AND (s.on_date = (cs.starts_at AT TIME ZONE s.timezone)::date
                           OR s.weekday = extract(isodow FROM cs.starts_at AT TIME ZONE s.timezone))))
"""


async def refresh_timetable(conn, first_day: dt.date, last_day: dt.date) -> dict[str, int]:
    """After the timetable changed (a dashboard edit, an import): drop the future sessions it no longer
    has (:data:`_STALE_SESSIONS_SQL`), then make its sessions from ``first_day`` to ``last_day``. Writers
    make the sessions of other days when their events need them (``TimetableCache``: again after its ttl)."""
    async with conn.transaction():
        dropped = int((await conn.execute(_STALE_SESSIONS_SQL)).split()[-1])
        made = await materialise_timetable(conn, first_day, last_day)
    return {"dropped": dropped, "made": made}
