"""A timetable changed while the system runs (a dashboard edit, `rollcall db load-config`) is followed
without a restart, on the real PostgreSQL: a running writer makes the sessions of a slot added after it
made that day's sessions once its ``TimetableCache`` time bound passes, and :func:`refresh_timetable`
replaces the future sessions of a changed slot while a session already opened stays."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg

from consumers import store
from consumers.timetable import refresh_timetable
from tests.test_attendance import _row, _write
from tests.test_writer_kit import prepare_database, writer_config

SLOT = """INSERT INTO timetable_slot (course_id, room_id, on_date, start_time, end_time, timezone)
          VALUES ('CS101', $1, $2, $3, $4, 'UTC') RETURNING id"""


def test_a_running_writer_makes_the_sessions_of_a_slot_added_later(fresh_database):
    config = writer_config()

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        cache = store.TimetableCache(ttl_s=1.0)
        try:
            await _write(conn, [_row("s1", "a", 0, 30)], cache)  # the day's sessions made, the day marked
            day = (await conn.fetchval("SELECT starts_at FROM class_session")).date()
            await conn.fetchval(SLOT, "B202", day, dt.time(11), dt.time(12))  # added while the writer runs
            await _write(conn, [_row("s2", "b", 125, 130, camera="room-B202", room="B202")], cache)
            sessions = "SELECT count(*) FROM class_session WHERE room_id = 'B202'"
            assert await conn.fetchval(sessions) == 0  # within the time bound: the day is not made again
            time.sleep(1.1)
            await _write(conn, [_row("s2", "b", 125, 140, camera="room-B202", room="B202")], cache)
            assert await conn.fetchval(sessions) == 1
            status = await conn.fetchval("""SELECT a.status FROM attendance a JOIN class_session cs ON cs.id = a.session_id
                                            WHERE cs.room_id = 'B202' AND a.person_id = 's2'""")
            assert status == "present"
        finally:
            await conn.close()

    asyncio.run(main())


def test_refresh_replaces_the_future_sessions_of_a_changed_slot(fresh_database):
    config = writer_config()

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        today = dt.datetime.now(dt.timezone.utc).date()
        first, last = today, today + dt.timedelta(days=7)
        try:
            slot = await conn.fetchval(SLOT, "B202", today + dt.timedelta(days=3), dt.time(9), dt.time(10))
            other = await conn.fetchval(SLOT, "A101", today + dt.timedelta(days=4), dt.time(9), dt.time(10))
            assert await refresh_timetable(conn, first, last) == {"dropped": 0, "made": 2}
            assert await refresh_timetable(conn, first, last) == {"dropped": 0, "made": 0}  # idempotent
            opened = await conn.fetchval("UPDATE class_session SET state = 'open', opened_at = now() "
                                         "WHERE slot_id = $1 RETURNING id", other)
            await conn.execute("UPDATE timetable_slot SET end_time = '10:30' WHERE id = $1", slot)
            await conn.execute("DELETE FROM timetable_slot WHERE id = $1", other)
            assert await refresh_timetable(conn, first, last) == {"dropped": 1, "made": 1}
            rows = await conn.fetch("SELECT id, room_id, ends_at FROM class_session ORDER BY starts_at")
            assert [(r["room_id"], r["ends_at"].time()) for r in rows] == [("B202", dt.time(10, 30)),
                                                                           ("A101", dt.time(10))]
            assert rows[1]["id"] == opened  # opened by hand: kept though its slot is gone
        finally:
            await conn.close()

    asyncio.run(main())
