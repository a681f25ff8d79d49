"""Class sessions and the attendance rules: timetable sessions, sessions opened and closed by hand or by
the clock, and the one place attendance rows are computed from the tracks seen in a session.

Attendance of a (session, person) is a pure function of the session (times, state, policy) and the
person's tracks in it (``presence_track``), so recomputing it any number of times, in any batch split,
gives the same row:

- the session's window is ``[starts_at - early_arrival, min(ends_at, closed_at)]``; sightings outside
  it do not count;
- ``first_seen``/``last_seen`` are the earliest/latest sighting inside the window (a door recognition
  counts as a sighting at the door), ``presence_s`` the length of the union of the person's track
  intervals clipped to the window (two cameras seeing the same person are not counted twice; a door
  recognition is a zero-length sighting, so this is room presence);
- the evidence: door recognitions (door face tracks) and the first one, room tracks, and whether a face
  seen by the room camera gave a room track this person's identity (``room_face``);
- status, while the session is open (provisional): ``late`` when first seen more than ``late_after``
  after the start, else ``present``; once closed (final), with less than ``present_min`` of presence:
  ``absent`` without a door recognition, else the course's ``door_only`` policy (``unconfirmed``, the
  default, or ``absent``; ``present`` goes on as if present long enough, without ``left_early``); with
  enough presence ``late``, else ``left_early`` when last seen more than ``left_early`` before the end,
  else ``present``; students of the course never seen get an ``absent`` row at closing;
- an ``unconfirmed`` record faculty resolved (:func:`resolve_unconfirmed`) keeps their status.

Policy: the course's (minutes), unless the session overrides it (seconds, ``class_session.*_s``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Sequence

from infra.foundation.errors import RollcallError

# Every attendance status; the first three count as attended. 'unconfirmed': recognised at the room's door
# with too little presence in the room, under the course policy door_only = 'unconfirmed' (for faculty).
STATUSES = ("present", "late", "left_early", "unconfirmed", "absent")
ATTENDED = STATUSES[:3]
RESOLUTIONS = ("present", "late", "absent")  # what faculty may make of an unconfirmed record

# The session facts every rule needs (policy resolved to intervals / seconds).
_SESSION_WINDOW = """
    SELECT cs.id AS session_id, cs.course_id, cs.room_id, cs.starts_at, cs.ends_at, cs.state,
           cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60)) AS open_from,
           least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at)) AS open_until,
           make_interval(secs => coalesce(cs.late_after_s, c.late_after_min * 60)) AS late_after,
           coalesce(cs.present_min_s, c.present_min_minutes * 60) AS present_min_s,
           make_interval(secs => coalesce(cs.left_early_s, c.left_early_min * 60)) AS left_early,
           c.door_only, cs.state = 'closed' AS final
    FROM class_session cs JOIN course c ON c.id = cs.course_id
"""

_UTC = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

def _payload_sql(alias: str) -> str:
    """The attendance event's fields (schemas/attendance.v1.json) as jsonb, from a row and its session.

    An 'unconfirmed' row goes out as status 'absent' with ``unconfirmed: true``: a new value of ``status``
    would be a breaking change of attendance.v1 (readers of 1.0 reject it), the flag is an optional field."""
    a = alias
    return f"""jsonb_build_object(
        'change', {a}.change, 'session_id', {a}.session_id, 'course_id', w.course_id, 'room_id', w.room_id,
        'session_starts_at', {_UTC.format('w.starts_at')}, 'session_ends_at', {_UTC.format('w.ends_at')},
        'final', w.final, 'person_id', {a}.person_id,
        'status', CASE WHEN {a}.status = 'unconfirmed' THEN 'absent' ELSE {a}.status END,
        'unconfirmed', coalesce({a}.status = 'unconfirmed', false),
        'first_seen', {_UTC.format(f'{a}.first_seen')}, 'last_seen', {_UTC.format(f'{a}.last_seen')},
        'presence_s', round({a}.presence_s::numeric, 3), 'evidence_event_ids', to_jsonb({a}.evidence_event_ids),
        'evidence', jsonb_build_object(
            'door_recognitions', {a}.door_recognitions, 'first_door_at', {_UTC.format(f'{a}.first_door_at')},
            'room_tracks', {a}.room_tracks, 'room_face', {a}.room_face),
        'changed_at', {_UTC.format('now()')})"""


# Recompute the attendance rows of the given (session, person) pairs; rows whose figures change are
# written, rows left without evidence are removed (unless an absent row is due), and the changes that
# matter downstream (a new row, a new status, a removal, anything in a closed session) go to the outbox.
RECOMPUTE_SQL = f"""
WITH pairs AS (
    SELECT DISTINCT session_id, person_id FROM unnest($1::bigint[], $2::text[]) AS p (session_id, person_id)
), win AS (
    {_SESSION_WINDOW} WHERE cs.id IN (SELECT session_id FROM pairs)
), clipped AS (
    SELECT t.session_id, t.person_id, greatest(t.first_seen, w.open_from) AS f, least(t.last_seen, w.open_until) AS l,
           t.first_event_id, t.last_event_id, t.recognition_event_id, t.source,
           t.face_person_id IS NOT DISTINCT FROM t.person_id AS face_confirmed
    FROM presence_track t JOIN pairs p USING (session_id, person_id) JOIN win w USING (session_id)
    WHERE least(t.last_seen, w.open_until) >= greatest(t.first_seen, w.open_from)
), marked AS (
    SELECT *, max(l) OVER (PARTITION BY session_id, person_id ORDER BY f, l
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM clipped
), islands AS (
    SELECT *, count(*) FILTER (WHERE reach IS NULL OR f > reach)
                  OVER (PARTITION BY session_id, person_id ORDER BY f, l ROWS UNBOUNDED PRECEDING) AS island
    FROM marked
), spans AS (
    SELECT session_id, person_id, min(f) AS f, max(l) AS l FROM islands GROUP BY session_id, person_id, island
), totals AS (
    SELECT session_id, person_id, min(f) AS first_seen, max(l) AS last_seen,
           sum(extract(epoch FROM l - f))::float8 AS presence_s
    FROM spans GROUP BY session_id, person_id
), evidence AS (
    SELECT session_id, person_id, array_agg(DISTINCT e::text ORDER BY e::text) AS ids
    FROM clipped, LATERAL unnest(ARRAY[first_event_id, last_event_id, recognition_event_id]) AS e
    WHERE e IS NOT NULL GROUP BY session_id, person_id
), sources AS (
    SELECT session_id, person_id, count(*) FILTER (WHERE source = 'door') AS door_recognitions,
           min(f) FILTER (WHERE source = 'door') AS first_door_at, count(*) FILTER (WHERE source = 'room') AS room_tracks,
           coalesce(bool_or(source = 'room' AND face_confirmed), false) AS room_face
    FROM clipped GROUP BY session_id, person_id
), wanted AS (
    -- Too little room presence with a door recognition: the course's door_only policy decides; a record
    -- faculty resolved by hand keeps their decision.
    SELECT p.session_id, p.person_id, w.final,
           CASE WHEN cur.resolved_status IS NOT NULL THEN cur.resolved_status
                WHEN t.first_seen IS NULL THEN 'absent'
                WHEN w.final AND t.presence_s < w.present_min_s AND s.door_recognitions > 0
                     AND w.door_only <> 'present' THEN w.door_only
                WHEN w.final AND t.presence_s < w.present_min_s AND s.door_recognitions = 0 THEN 'absent'
                WHEN t.first_seen > w.starts_at + w.late_after THEN 'late'
                WHEN w.final AND t.presence_s >= w.present_min_s AND t.last_seen < w.open_until - w.left_early
                     THEN 'left_early'
                ELSE 'present' END AS status,
           t.first_seen, t.last_seen, coalesce(t.presence_s, 0) AS presence_s, coalesce(e.ids, '{{}}') AS ids,
           coalesce(s.door_recognitions, 0) AS door_recognitions, s.first_door_at,
           coalesce(s.room_tracks, 0) AS room_tracks, coalesce(s.room_face, false) AS room_face
    FROM pairs p JOIN win w USING (session_id) JOIN person ON person.id = p.person_id
    LEFT JOIN totals t USING (session_id, person_id) LEFT JOIN evidence e USING (session_id, person_id)
    LEFT JOIN sources s USING (session_id, person_id)
    LEFT JOIN attendance cur USING (session_id, person_id)
    WHERE t.first_seen IS NOT NULL OR cur.resolved_status IS NOT NULL
       OR (w.final AND EXISTS (SELECT 1 FROM course_member m WHERE m.course_id = w.course_id
                               AND m.person_id = p.person_id AND m.role = 'student'))
), before AS (
    SELECT a.session_id, a.person_id, a.status FROM attendance a JOIN pairs p USING (session_id, person_id)
), removed AS (
    DELETE FROM attendance a USING pairs p
    WHERE a.session_id = p.session_id AND a.person_id = p.person_id
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.session_id = a.session_id AND w.person_id = a.person_id)
    RETURNING a.session_id, a.person_id
), changed AS (
    INSERT INTO attendance AS a (session_id, person_id, status, first_seen, last_seen, presence_s, evidence_event_ids,
                                 door_recognitions, first_door_at, room_tracks, room_face)
    SELECT session_id, person_id, status, first_seen, last_seen, presence_s, ids, door_recognitions, first_door_at,
           room_tracks, room_face FROM wanted
    ON CONFLICT (session_id, person_id) DO UPDATE
        SET status = EXCLUDED.status, first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
            presence_s = EXCLUDED.presence_s, evidence_event_ids = EXCLUDED.evidence_event_ids,
            door_recognitions = EXCLUDED.door_recognitions, first_door_at = EXCLUDED.first_door_at,
            room_tracks = EXCLUDED.room_tracks, room_face = EXCLUDED.room_face, updated_at = now()
        WHERE (a.status, a.first_seen, a.last_seen, a.presence_s, a.evidence_event_ids, a.door_recognitions,
               a.first_door_at, a.room_tracks, a.room_face)
              IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.first_seen, EXCLUDED.last_seen, EXCLUDED.presence_s,
                                EXCLUDED.evidence_event_ids, EXCLUDED.door_recognitions, EXCLUDED.first_door_at,
                                EXCLUDED.room_tracks, EXCLUDED.room_face)
    RETURNING a.*
), published AS (
    SELECT c.session_id, c.person_id, CASE WHEN b.status IS NULL THEN 'recorded' ELSE 'updated' END AS change,
           c.status, c.first_seen, c.last_seen, c.presence_s, c.evidence_event_ids, c.door_recognitions,
           c.first_door_at, c.room_tracks, c.room_face
    FROM changed c LEFT JOIN before b USING (session_id, person_id) JOIN win w USING (session_id)
    WHERE b.status IS NULL OR b.status <> c.status OR w.final
    UNION ALL
    SELECT r.session_id, r.person_id, 'withdrawn', NULL, NULL, NULL, 0, '{{}}'::text[], 0, NULL, 0, false
    FROM removed r
), outbox AS (
    INSERT INTO attendance_outbox (session_id, payload)
    SELECT p.session_id, {_payload_sql('p')} FROM published p JOIN win w USING (session_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM changed) + (SELECT count(*) FROM removed) AS changed, (SELECT count(*) FROM outbox) AS published
"""


# Every row of a closed session, for the outbox (its final figures, even when they did not change).
_FINALISED_SQL = f"""
INSERT INTO attendance_outbox (session_id, payload)
SELECT a.session_id, {_payload_sql('a')}
FROM (SELECT *, 'finalised' AS change FROM attendance WHERE session_id = $1) a
JOIN ({_SESSION_WINDOW} WHERE cs.id = $1) w USING (session_id)
"""

# Sessions of the timetable's slots on the given dates (in each slot's own time zone), created once.
MATERIALISE_SQL = """
INSERT INTO class_session (course_id, room_id, slot_id, starts_at, ends_at)
SELECT s.course_id, s.room_id, s.id, (d::date + s.start_time) AT TIME ZONE s.timezone,
       (d::date + s.end_time) AT TIME ZONE s.timezone
FROM timetable_slot s, generate_series($1::date, $2::date, interval '1 day') AS d
WHERE (s.on_date = d::date OR s.weekday = extract(isodow FROM d))
  AND (s.valid_from IS NULL OR d::date >= s.valid_from) AND (s.valid_until IS NULL OR d::date <= s.valid_until)
ON CONFLICT (room_id, starts_at) DO NOTHING
"""


# The same for a set of dates (the days a batch's events fall on, not every day between its extremes).
MATERIALISE_DAYS_SQL = MATERIALISE_SQL.replace("generate_series($1::date, $2::date, interval '1 day') AS d",
                                               "unnest($1::date[]) AS d")


async def recompute_attendance(conn, pairs: Iterable[tuple[int, str]]) -> int:
    """Recompute the attendance rows of these (session id, person id) pairs; the number changed."""
    pairs = list(pairs)
    if not pairs:
        return 0
    await lock_sessions(conn, {p[0] for p in pairs})
    row = await conn.fetchrow(RECOMPUTE_SQL, [p[0] for p in pairs], [p[1] for p in pairs])
    return int(row["changed"])


async def lock_sessions(conn, session_ids: Iterable[int]) -> None:
    """Hold these sessions (share lock, in id order) until the transaction ends. Attendance computed while
    a session is being closed would be computed against the session as it was before: a batch's rows
    written after the clock finalised them would stay provisional, and the closing would miss the batch's
    tracks. With the lock the two take turns, and the second one's statements see the first one's work
    (each statement of a READ COMMITTED transaction reads what was committed when it began). Closing
    takes the session's row lock first, then attendance rows; so does everything that recomputes."""
    ids = sorted(set(session_ids))
    if ids:
        await conn.execute("SELECT 1 FROM class_session WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE", ids)


async def materialise_timetable(conn, first_day: dt.date, last_day: dt.date) -> int:
    """Create the timetable's sessions from ``first_day`` to ``last_day`` (idempotent); how many were new."""
    status = await conn.execute(MATERIALISE_SQL, first_day, last_day)
    return int(status.split()[-1])


async def materialise_days(conn, days: Iterable[dt.date]) -> int:
    """Create the timetable's sessions on these dates (idempotent); how many were new."""
    status = await conn.execute(MATERIALISE_DAYS_SQL, sorted(set(days)))
    return int(status.split()[-1])


async def finalise_session(conn, session_id: int) -> dict[str, int]:
    """Recompute every row of a closed session (absent rows for students never seen) and publish them."""
    pairs = await conn.fetch(
        """SELECT $1::bigint AS session_id, person_id FROM presence_track WHERE session_id = $1 AND person_id IS NOT NULL
           UNION SELECT $1, m.person_id FROM course_member m JOIN class_session cs ON cs.course_id = m.course_id
                 WHERE cs.id = $1 AND m.role = 'student'
           UNION SELECT $1, person_id FROM attendance WHERE session_id = $1""", session_id)
    await recompute_attendance(conn, [(r["session_id"], r["person_id"]) for r in pairs])
    await conn.execute(_FINALISED_SQL, session_id)
    rows = await conn.fetch("SELECT status, count(*) AS n FROM attendance WHERE session_id = $1 GROUP BY status",
                            session_id)
    counts = {status: 0 for status in STATUSES}
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


async def resolve_unconfirmed(conn, session_id: int, person_id: str, status: str, *, actor: str) -> dict[str, Any]:
    """Faculty's answer to an 'unconfirmed' record of a closed session: ``present``, ``late`` or ``absent``.
    The record keeps its evidence; its status is the decision from now on (published as an 'updated'
    attendance event, written to audit_log). Returns the record."""
    if status not in RESOLUTIONS:
        raise RollcallError(f"status {status!r}: an unconfirmed record is resolved as {', '.join(RESOLUTIONS)}")
    async with conn.transaction():
        await lock_sessions(conn, [session_id])  # the session before its rows, as closing does
        row = await conn.fetchrow("SELECT status FROM attendance WHERE session_id = $1 AND person_id = $2 FOR UPDATE",
                                  session_id, person_id)
        if row is None:
            raise RollcallError(f"no attendance record of {person_id!r} in session {session_id}")
        if row["status"] != "unconfirmed":
            raise RollcallError(f"the record of {person_id!r} in session {session_id} is {row['status']}, not "
                                "unconfirmed: only unconfirmed records are resolved by hand")
        await conn.execute("""UPDATE attendance SET resolved_status = $3, resolved_by = $4, resolved_at = now()
                              WHERE session_id = $1 AND person_id = $2""", session_id, person_id, status, actor)
        await recompute_attendance(conn, [(session_id, person_id)])
        await _audit(conn, actor, "attendance.resolve", f"{session_id}/{person_id}", {"status": status})
        return dict(await conn.fetchrow("SELECT * FROM attendance WHERE session_id = $1 AND person_id = $2",
                                        session_id, person_id))


async def open_session(conn, *, course_id: str, room_id: str, actor: str, starts_at: dt.datetime | None = None,
                       ends_at: dt.datetime | None = None, minutes: float | None = None,
                       policy_s: dict[str, int] | None = None, note: str | None = None) -> dict[str, Any]:
    """Open a session by hand: the timetable session of this course running in the room now is opened,
    or a new one-off session is made (from ``starts_at``, default now, to ``ends_at`` or for ``minutes``).

    ``policy_s`` overrides the course policy for this session, in seconds: ``early_arrival_s``,
    ``late_after_s``, ``present_min_s``, ``left_early_s``. Writes an audit_log entry.
    """
    policy_s = dict(policy_s or {})
    unknown = set(policy_s) - {"early_arrival_s", "late_after_s", "present_min_s", "left_early_s"}
    if unknown:
        raise RollcallError(f"session policy: unknown key(s) {', '.join(sorted(unknown))}: use early_arrival_s, "
                            "late_after_s, present_min_s, left_early_s")
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM course WHERE id = $1", course_id):
            raise RollcallError(f"course {course_id!r} does not exist: add it to the config and run `rollcall db load-config`")
        if not await conn.fetchval("SELECT 1 FROM room WHERE id = $1", room_id):
            raise RollcallError(f"room {room_id!r} does not exist: add it to the config and run `rollcall db load-config`")
        now = await conn.fetchval("SELECT now()")
        starts_at = starts_at or now
        if ends_at is None and minutes is None:
            running = await conn.fetchrow(
                """SELECT id FROM class_session WHERE room_id = $1 AND course_id = $2 AND state = 'scheduled'
                   AND starts_at <= $3 + interval '1 hour' AND ends_at > $3 ORDER BY starts_at LIMIT 1""",
                room_id, course_id, starts_at)
            if running is None:
                raise RollcallError(f"no timetable session of {course_id} in {room_id} now: give --minutes or --ends-at "
                                    "to open a one-off session")
            session_id = running["id"]
            await conn.execute(
                f"""UPDATE class_session SET state = 'open', opened_at = now(), opened_by = $2,
                    {', '.join(f'{k} = ${i + 3}' for i, k in enumerate(policy_s)) or 'note = note'}
                    WHERE id = $1""", session_id, actor, *policy_s.values())
        else:
            ends_at = ends_at or starts_at + dt.timedelta(minutes=float(minutes))
            if ends_at <= starts_at:
                raise RollcallError("session end must be after its start: check --ends-at / --minutes")
            columns = ["course_id", "room_id", "starts_at", "ends_at", "state", "opened_at", "opened_by", "note",
                       *policy_s]
            values = [course_id, room_id, starts_at, ends_at, "open", now, actor, note, *policy_s.values()]
            session_id = await conn.fetchval(
                f"""INSERT INTO class_session ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(values)))})
                    ON CONFLICT (room_id, starts_at) DO NOTHING RETURNING id""", *values)
            if session_id is None:
                raise RollcallError(f"room {room_id} already has a session starting at {starts_at.isoformat()}: "
                                    "close it or pick another start")
        await _audit(conn, actor, "session.open", str(session_id), {"course_id": course_id, "room_id": room_id})
    return await session_info(conn, session_id)


async def close_session(conn, session_id: int, *, actor: str, at: dt.datetime | None = None) -> dict[str, Any]:
    """Close a session by hand (an instructor ends attendance early) or by the clock: sightings after
    ``at`` (default now, at most the scheduled end) no longer count, statuses become final and students
    of the course who were never seen are marked absent. Returns the session with its status counts."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT state, starts_at, ends_at FROM class_session WHERE id = $1 FOR UPDATE",
                                  session_id)
        if row is None:
            raise RollcallError(f"session {session_id} does not exist: `rollcall attendance session list` shows them")
        if row["state"] in ("closed", "cancelled"):
            raise RollcallError(f"session {session_id} is already {row['state']}")
        closed_at = await conn.fetchval("SELECT least(coalesce($2::timestamptz, now()), $1)", row["ends_at"], at)
        closed_at = max(closed_at, row["starts_at"])
        await conn.execute("UPDATE class_session SET state = 'closed', closed_at = $2, closed_by = $3 WHERE id = $1",
                           session_id, closed_at, actor)
        counts = await finalise_session(conn, session_id)
        await _audit(conn, actor, "session.close", str(session_id), counts)
    return {**await session_info(conn, session_id), "counts": counts}


async def close_due_sessions(conn, *, grace_s: float) -> list[int]:
    """Close, by the clock, sessions that ended more than ``grace_s`` ago (late events still count up to
    then); their closing time is their scheduled end, so the result does not depend on when this runs."""
    closed = []
    due = await conn.fetch(
        """SELECT id FROM class_session WHERE state IN ('scheduled', 'open')
           AND ends_at + make_interval(secs => $1) < now() ORDER BY ends_at LIMIT 100""", float(grace_s))
    for row in due:
        async with conn.transaction():
            updated = await conn.fetchval(
                """UPDATE class_session SET state = 'closed', closed_at = ends_at, closed_by = 'clock'
                   WHERE id = $1 AND state IN ('scheduled', 'open') RETURNING id""", row["id"])
            if updated:
                await finalise_session(conn, row["id"])
                closed.append(row["id"])
    await conn.execute("""UPDATE class_session SET state = 'open', opened_at = starts_at, opened_by = 'clock'
                          WHERE state = 'scheduled' AND starts_at <= now() AND ends_at > now()""")
    return closed


async def session_info(conn, session_id: int) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM class_session WHERE id = $1", session_id)
    if row is None:
        raise RollcallError(f"session {session_id} does not exist: `rollcall attendance session list` shows them")
    return dict(row)


async def list_sessions(conn, *, room_id: str | None = None, course_id: str | None = None,
                        date_from: dt.date | None = None, date_to: dt.date | None = None,
                        states: Sequence[str] | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT cs.*, (SELECT count(*) FROM attendance a WHERE a.session_id = cs.id
                            AND a.status IN ('present', 'late', 'left_early')) AS attended
           FROM class_session cs
           WHERE ($1::text IS NULL OR room_id = $1) AND ($2::text IS NULL OR course_id = $2)
             AND ($3::date IS NULL OR ends_at >= $3::date) AND ($4::date IS NULL OR starts_at < $4::date + 1)
             AND ($5::text[] IS NULL OR state = ANY($5))
           ORDER BY starts_at, room_id""", room_id, course_id, date_from, date_to, list(states) if states else None)
    return [dict(r) for r in rows]


async def _audit(conn, actor: str, action: str, subject: str | None, detail: dict) -> None:
    await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4::jsonb)",
                       actor, action, subject, json.dumps(detail, default=str))
