"""Attendance rules on the real PostgreSQL, batches written directly (no broker): the session a sighting
belongs to, statuses by policy (late, left early, too little presence, absent students at closing), an
identity correction moving credit, a session closed early by hand, timetable sessions in the site's zone."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest

from consumers import store
from consumers.sessions import (close_due_sessions, close_session, list_sessions, materialise_timetable,
                                open_session)
from infra.foundation.errors import RollcallError
from tests.test_writer_kit import prepare_database, writer_config
from consumers.sessions import finalise_session
from infra.foundation.config import config_from_dict

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)  # the kit's timetable slot: Monday 09:00-10:30


def _row(person, track, minute_from, minute_to, kind="update", camera="room-A101", room="A101", source="handoff"):
    """A sighting of a track from minute_from to minute_to after 09:00 (one event at its end); ``source``:
    the presence event's identity_source (None for a door recognition)."""
    first, last = T0 + dt.timedelta(minutes=minute_from), T0 + dt.timedelta(minutes=minute_to)
    source = None if kind == "recognition" else source
    return (str(uuid.uuid4()), kind, room, camera, track, person, last, first, last, None, source, "test", 0, 0)


def _door(person, track, minute, camera="door-A101"):
    """A door recognition of ``person`` at ``minute`` after 09:00 (a zero-length sighting at the door)."""
    return _row(person, track, minute, minute, kind="recognition", camera=camera)


async def _write(conn, rows, cache):
    return await store.write_batch(conn, "g", rows, {}, {}, cache)


async def _attendance(conn, session_id):
    return {r["person_id"]: (r["status"], round(r["presence_s"] / 60, 1)) for r in await conn.fetch(
        "SELECT person_id, status, presence_s FROM attendance WHERE session_id = $1", session_id)}


def test_policy_statuses_from_sightings_and_closing(fresh_database):
    config = writer_config()  # CS101: early 15, late after 10, present 20 min, left early 10; roster s1..s4

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        cache = store.TimetableCache()
        try:
            first = _row("s1", "a", -5, 90)
            await _write(conn, [
                first,                              # early (within early arrival), stays: present
                _row("s2", "b", 25, 90),            # 25 min late: late
                _row("s3", "c", 0, 40),             # leaves 50 min early: left early
                _row("s3", "c2", 30, 35),           # overlapping second track: not counted twice
                _row("prof", "d", 0, 5),            # 5 min: absent when closed (too little presence)
                _row(None, "e", 0, 90),             # a visitor: no row
                _row("s1", "x", -120, -60),         # before the session's window: ignored
            ], cache)
            session_id = (await list_sessions(conn))[0]["id"]
            provisional = await _attendance(conn, session_id)
            assert provisional == {"s1": ("present", 95.0), "s2": ("late", 65.0), "s3": ("present", 40.0),
                                   "prof": ("present", 5.0)}, "while open: present or late by arrival"
            # identity correction: track c is s4's, not s3's: the credit moves
            await _write(conn, [_row("s4", "c", 0, 41)], cache)
            moved = await _attendance(conn, session_id)
            assert moved["s4"] == ("present", 41.0) and moved["s3"] == ("late", 5.0)  # only c2 (from 09:30) left
            await conn.execute("UPDATE class_session SET state = 'closed', closed_at = ends_at WHERE id = $1", session_id)

            counts = await finalise_session(conn, session_id)
            final = await _attendance(conn, session_id)
            assert final == {"s1": ("present", 95.0), "s2": ("late", 65.0), "s3": ("absent", 5.0),
                             "s4": ("left_early", 41.0), "prof": ("absent", 5.0)}
            assert counts == {"present": 1, "late": 1, "left_early": 1, "unconfirmed": 0, "absent": 2}
            # a replayed batch changes nothing
            before = await conn.fetch("SELECT * FROM attendance ORDER BY person_id")
            await _write(conn, [first], cache)
            assert await conn.fetch("SELECT * FROM attendance ORDER BY person_id") == before
            outbox = await conn.fetchval("SELECT count(*) FROM attendance_outbox WHERE payload->>'change' = 'finalised'")
            assert outbox == 5
        finally:
            await conn.close()

    asyncio.run(main())


def test_sessions_by_hand_and_timetable_in_the_site_zone(fresh_database):
    raw_config = writer_config().model_dump(mode="json", exclude={"source"})
    raw_config["site"] = {"timezone": "Europe/Paris"}
    raw_config["timetable"] = [{"course": "CS101", "room": "B202", "weekday": "mon", "start": "09:00:00", "end": "10:00:00"}]

    config = config_from_dict(raw_config, environ={})

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        try:
            # weekly slot, local time: Monday 2 November 2026 09:00 in Paris is 08:00 UTC
            assert await materialise_timetable(conn, dt.date(2026, 11, 1), dt.date(2026, 11, 8)) == 1
            assert await materialise_timetable(conn, dt.date(2026, 11, 1), dt.date(2026, 11, 8)) == 0
            slot = (await list_sessions(conn, room_id="B202"))[0]
            assert slot["starts_at"] == dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)
            # a one-off session opened by hand, closed early by the instructor: later sightings do not count
            start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
            info = await open_session(conn, course_id="CS101", room_id="A101", actor="prof", starts_at=start,
                                      minutes=60, policy_s={"present_min_s": 60})
            assert info["state"] == "open" and info["opened_by"] == "prof"
            closed = await close_session(conn, info["id"], actor="prof")
            assert closed["state"] == "closed" and closed["closed_at"] < info["ends_at"]
            assert closed["counts"]["absent"] == 4, "every student of the roster, never seen, is absent"
            late = closed["closed_at"] + dt.timedelta(minutes=1)
            await store.write_batch(conn, "g", [(str(uuid.uuid4()), "update", "A101", "cam", "t", "s1", late,
                                                 late, late, None, "handoff", "test", 0, 0)], {}, {},
                                    store.TimetableCache())
            status = await conn.fetchval("SELECT status FROM attendance WHERE session_id = $1 AND person_id = 's1'",
                                         info["id"])
            assert status == "absent"
            with pytest.raises(RollcallError, match="already closed"):
                await close_session(conn, info["id"], actor="prof")
            with pytest.raises(RollcallError, match="course 'NOPE' does not exist"):
                await open_session(conn, course_id="NOPE", room_id="A101", actor="x", minutes=10)
            actions = [r["action"] for r in await conn.fetch("SELECT action FROM audit_log ORDER BY id")]
            assert actions == ["session.open", "session.close"]
        finally:
            await conn.close()

    asyncio.run(main())


def test_a_batch_written_while_the_session_closes_is_in_the_final_rows(fresh_database):
    """The writer's transaction and the clock's closing overlap (seen in CI: the clock closes a past session
    while the writer is still catching up): the closing waits for the batch, then finalises with it. Before,
    the closing computed s2's row without the batch's track (absent) and overwrote the batch's row."""
    config = writer_config()

    async def main():
        await prepare_database(fresh_database, config)
        writer, clock = await asyncpg.connect(fresh_database), await asyncpg.connect(fresh_database)
        await store.prepare(writer)
        cache = store.TimetableCache()
        try:
            await _write(writer, [_row("s1", "a", 0, 90)], cache)
            session_id = (await list_sessions(writer))[0]["id"]
            batch = writer.transaction()
            await batch.start()  # the batch is being written: write_batch's transaction is nested in it
            await _write(writer, [_row("s2", "b", 0, 90)], cache)
            closing = asyncio.create_task(close_due_sessions(clock, grace_s=0))  # the past session is due
            await asyncio.sleep(0.5)
            assert not closing.done(), "the closing waits for the batch being written"
            await batch.commit()
            assert await asyncio.wait_for(closing, 10) == [session_id]
            assert await _attendance(writer, session_id) == {
                "s1": ("present", 90.0), "s2": ("present", 90.0), "s3": ("absent", 0.0), "s4": ("absent", 0.0)}
        finally:
            await writer.close()
            await clock.close()

    asyncio.run(main())
