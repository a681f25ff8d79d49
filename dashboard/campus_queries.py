"""The SQL of the campus set-up pages (admin): rooms, courses, rosters and the timetable, read and written
in PostgreSQL, which holds the campus (`rollcall db load-config` imports the TOML file into the same tables).
Every write is one transaction; the CSV imports write their valid rows in one statement each."""

from __future__ import annotations

import datetime as dt
from typing import Any

from infra.foundation.topology import UPSERT_SLOT_SQL


async def rooms(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        """SELECT r.id, r.name, r.capacity, (SELECT count(*) FROM camera c WHERE c.room_id = r.id) AS cameras,
                  (SELECT count(*) FROM timetable_slot s WHERE s.room_id = r.id) AS slots
           FROM room r ORDER BY r.id""")]


async def save_room(conn, room_id: str, name: str, capacity: int | None, *, create: bool) -> bool:
    """Create (False when the id is taken) or update (False when there is no such room)."""
    if create:
        status = await conn.execute("INSERT INTO room (id, name, capacity) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                    room_id, name, capacity)
    else:
        status = await conn.execute("UPDATE room SET name = $2, capacity = $3, updated_at = now() WHERE id = $1",
                                    room_id, name, capacity)
    return status.split()[-1] == "1"


async def courses(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        """SELECT c.*, (SELECT count(*) FROM course_member m WHERE m.course_id = c.id AND m.role = 'student') AS students,
                  (SELECT count(*) FROM timetable_slot s WHERE s.course_id = c.id) AS slots
           FROM course c ORDER BY c.id""")]


COURSE_FIELDS = ("name", "early_arrival_min", "late_after_min", "present_min_minutes", "left_early_min", "door_only")


async def save_course(conn, course_id: str, values: dict[str, Any], *, create: bool) -> bool:
    args = [course_id, *(values[f] for f in COURSE_FIELDS)]
    if create:
        status = await conn.execute(
            f"""INSERT INTO course (id, {', '.join(COURSE_FIELDS)}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT DO NOTHING""", *args)
    else:
        sets = ", ".join(f"{f} = ${i + 2}" for i, f in enumerate(COURSE_FIELDS))
        status = await conn.execute(f"UPDATE course SET {sets}, updated_at = now() WHERE id = $1", *args)
    return status.split()[-1] == "1"


async def known(conn) -> dict[str, set[str]]:
    """The ids a CSV row may name."""
    return {"courses": {r["id"] for r in await conn.fetch("SELECT id FROM course")},
            "rooms": {r["id"] for r in await conn.fetch("SELECT id FROM room")},
            "people": {r["id"] for r in await conn.fetch("SELECT id FROM person WHERE pseudonymised_at IS NULL")}}


async def roster(conn, course_id: str | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        """SELECT m.course_id, m.person_id, m.role, p.display_name FROM course_member m
           JOIN person p ON p.id = m.person_id WHERE ($1::text IS NULL OR m.course_id = $1)
           ORDER BY m.course_id, m.role DESC, m.person_id""", course_id)]


async def upsert_roster(conn, rows: list[tuple[str, str, str]]) -> int:
    """(course, person, role) rows: added, or the role updated when the pair is there already."""
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO course_member (course_id, person_id, role) VALUES ($1, $2, $3)
               ON CONFLICT (course_id, person_id) DO UPDATE SET role = EXCLUDED.role""", rows)
    return len(rows)


async def remove_member(conn, course_id: str, person_id: str) -> bool:
    status = await conn.execute("DELETE FROM course_member WHERE course_id = $1 AND person_id = $2",
                                course_id, person_id)
    return status.split()[-1] == "1"


async def timetable(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        """SELECT id, course_id, room_id, weekday, on_date, start_time, end_time, timezone FROM timetable_slot
           ORDER BY course_id, coalesce(weekday, 0), on_date NULLS FIRST, start_time, room_id""")]


async def upsert_slots(conn, rows: list[tuple], timezone: str) -> int:
    """(course, room, weekday, date, start, end) rows in the site's time zone: added, or the end updated
    when the slot (course, room, day, start) is there already."""
    async with conn.transaction():
        await conn.executemany(UPSERT_SLOT_SQL, [(*row, timezone) for row in rows])
    return len(rows)


async def remove_slot(conn, slot_id: int) -> bool:
    return (await conn.execute("DELETE FROM timetable_slot WHERE id = $1", slot_id)).split()[-1] == "1"


async def upcoming_sessions(conn, days: int, timezone: str) -> list[dict[str, Any]]:
    """The sessions of the next ``days`` days (local start and end times for the page)."""
    now = dt.datetime.now(dt.timezone.utc)
    return [dict(r) for r in await conn.fetch(
        """SELECT id, course_id, room_id, state, to_char(starts_at AT TIME ZONE $3, 'Dy YYYY-MM-DD HH24:MI') AS starts,
                  to_char(ends_at AT TIME ZONE $3, 'HH24:MI') AS ends
           FROM class_session WHERE ends_at >= $1 AND starts_at < $2 ORDER BY starts_at, room_id LIMIT 500""",
        now, now + dt.timedelta(days=days), timezone)]
