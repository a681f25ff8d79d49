"""Evidence that does not vanish, on the real PostgreSQL: someone recognised at the room's door whom the room
camera lost gets the course's door_only status (default 'unconfirmed', not 'absent'); every row says what it
stands on (door recognitions, room tracks and their minutes, a room face); the attendance event carries it
(attendance.v1 1.1, valid against the schema); exports and the dashboard's session and student pages show it."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import shutil
import uuid

import asyncpg
import pytest

from consumers import store
from consumers.exports import export_course, export_session, export_student
from consumers.privacy import erase_person
from infra.scenario.attendance import score_attendance
from consumers.sessions import close_session, list_sessions, open_session, resolve_unconfirmed
from infra.scenario.synthetic import Stream, presence_event, recognition_event
from consumers.writer import attendance_event
from dashboard import queries
from infra.devstack import dashboard as testing
from dashboard.app import create_app, templates
from infra.foundation import db
from infra.foundation.errors import RollcallError
from infra.foundation.config import EXAMPLE_CONFIG, config_from_dict, load_config
from schemas.events import decode
from tests.conftest import create_database
from tests.test_attendance import T0, _door, _row
from tests.test_writer_kit import (create_topics, encoded, prepare_database, produce, read_topic,
                                   run_writer_until_caught_up, writer_raw_config)

# CS101 (kit): 09:00-10:30, early arrival 15 min, late after 10, present 20 min, left early 10; roster s1..s4.
SIGHTINGS = [
    _door("s1", "d1", 2),                                  # recognised at the door, never seen in the room
    _door("s2", "d2", 1), _row("s2", "r2", 1, 90),         # door, then the whole class in the room
    _row("s3", "r3", 0, 90), _row("s3", "r3", 0, 90, kind="identity", source="face"),  # a room face confirms
    _door("s4", "d4", 0), _door("s4", "d4b", 3), _row("s4", "r4", 0, 5),  # door twice, the room camera lost them
    _row("prof", "r5", 0, 5),                              # 5 min in the room, no door: absent as before
    _door("prof", "d5", -60),                              # a door recognition outside the window: not evidence
    _door(None, "d6", 4),                                  # an unknown face at the door: nobody's evidence
]
EVIDENCE = {  # person: (door recognitions, first door time (minutes after 09:00), room tracks, minutes, room face)
    "s1": (1, 2, 0, 0.0, False),
    "s2": (1, 1, 1, 89.0, False),
    "s3": (0, None, 1, 90.0, True),
    "s4": (2, 0, 1, 5.0, False),
    "prof": (0, None, 1, 5.0, False),
}


def _config(door_only: str | None):
    raw = writer_raw_config()
    if door_only is not None:
        raw["courses"][0]["policy"]["door_only"] = door_only
    return config_from_dict(raw, environ={})


async def _rows(conn, session_id):
    return {r["person_id"]: r for r in await conn.fetch("SELECT * FROM attendance WHERE session_id = $1", session_id)}


def _evidence(row):
    first_door = None if row["first_door_at"] is None else (row["first_door_at"] - T0) / dt.timedelta(minutes=1)
    return (row["door_recognitions"], first_door, row["room_tracks"], round(row["presence_s"] / 60, 1), row["room_face"])


def _run(url, door_only, batches):
    """Write the sightings in ``batches`` (lists of rows), then close the session; (open rows, final rows,
    the outbox payloads of the closing)."""
    async def main():
        await prepare_database(url, _config(door_only))
        conn = await asyncpg.connect(url)
        await store.prepare(conn)
        cache = store.TimetableCache()
        try:
            for batch in batches:
                await store.write_batch(conn, "g", batch, {}, {}, cache)
            session_id = (await list_sessions(conn))[0]["id"]
            provisional = await _rows(conn, session_id)
            await close_session(conn, session_id, actor="test")
            final = await _rows(conn, session_id)
            outbox = [(o["event_id"], json.loads(o["payload"]))
                      for o in await conn.fetch("SELECT event_id, payload FROM attendance_outbox ORDER BY id")]
            finalised = {p["person_id"]: (event_id, p) for event_id, p in outbox if p["change"] == "finalised"}
            return provisional, final, finalised
        finally:
            await conn.close()

    return asyncio.run(main())


def test_door_only_is_unconfirmed_by_default_with_its_evidence(fresh_database):
    provisional, final, finalised = _run(fresh_database, None, [SIGHTINGS])
    assert provisional["s1"]["status"] == "present", "while open: a door recognition is an arrival"
    assert {p: r["status"] for p, r in final.items()} == {
        "s1": "unconfirmed",   # recognised at the door, the room camera never saw them: not absent
        "s2": "present", "s3": "present",
        "s4": "unconfirmed",   # 5 min in the room (< 20): the door evidence keeps them from 'absent'
        "prof": "absent",      # too little presence and no door evidence
    }
    assert {p: _evidence(r) for p, r in final.items()} == EVIDENCE

    # the event: v1.1, status 'absent' for a 1.0 reader, unconfirmed and the evidence for a 1.1 reader
    s1 = attendance_event(*finalised["s1"])
    assert s1["schema_version"] == "1.1" and s1["status"] == "absent" and s1["unconfirmed"] is True
    assert s1["evidence"] == {"door_recognitions": 1, "first_door_at": "2026-11-02T09:02:00.000Z",
                              "room_tracks": 0, "room_face": False}
    s3 = attendance_event(*finalised["s3"])
    assert s3["status"] == "present" and s3["unconfirmed"] is False
    assert s3["evidence"] == {"door_recognitions": 0, "first_door_at": None, "room_tracks": 1, "room_face": True}
    absent = attendance_event(*finalised["prof"])
    assert absent["status"] == "absent" and absent["unconfirmed"] is False


@pytest.mark.parametrize("door_only, s1, s4", [("present", "present", "present"), ("absent", "absent", "absent"),
                                               ("unconfirmed", "unconfirmed", "unconfirmed")])
def test_course_policy_door_only(fresh_database, door_only, s1, s4):
    # one event a batch: another split of the same stream gives the same rows
    _, final, finalised = _run(fresh_database, door_only, [[row] for row in SIGHTINGS])
    statuses = {p: r["status"] for p, r in final.items()}
    assert statuses == {"s1": s1, "s2": "present", "s3": "present", "s4": s4, "prof": "absent"}
    assert {p: _evidence(r) for p, r in final.items()} == EVIDENCE, "the evidence does not depend on the policy"
    for person, status in statuses.items():
        event = attendance_event(*finalised[person])
        assert event["unconfirmed"] is (status == "unconfirmed")


def test_a_late_door_only_arrival_is_late_under_the_present_policy(fresh_database):
    _, final, _ = _run(fresh_database, "present", [[_door("s1", "d1", 25), _row("s2", "r2", 0, 90)]])
    assert final["s1"]["status"] == "late" and final["s2"]["status"] == "present"


def test_a_face_correction_moves_the_room_face(fresh_database):
    # the door handed track r to s1; a face seen by the room camera says it is s2
    rows = [_row("s1", "r", 0, 90), _row("s2", "r", 0, 90, kind="identity", source="face")]
    _, final, _ = _run(fresh_database, None, [rows])
    assert "s1" not in final or final["s1"]["room_tracks"] == 0
    assert final["s2"]["room_face"] and final["s2"]["status"] == "present"


def test_erasing_a_person_leaves_no_room_face_identity(fresh_database):
    # a room face said s2, then the track went back to s1: the track keeps s2 as its face identity
    rows = [_row("s1", "r", 0, 30), _row("s2", "r", 0, 31, kind="identity", source="face"),
            _row("s1", "r", 0, 32, kind="identity", source="reacquired"),
            _row("s3", "q", 0, 30), _row("s3", "q", 0, 31, kind="identity", source="face")]

    async def main():
        await prepare_database(fresh_database, _config(None))
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        try:
            await store.write_batch(conn, "g", rows, {}, {}, store.TimetableCache())
            faces = "SELECT track_id, face_person_id FROM presence_track ORDER BY track_id"
            assert [tuple(r) for r in await conn.fetch(faces)] == [("q", "s3"), ("r", "s2")]
            room_face = "SELECT person_id, room_face FROM attendance ORDER BY person_id"
            assert [tuple(r) for r in await conn.fetch(room_face)] == [("s1", False), ("s3", True)]
            await erase_person(conn, "s2", pseudonymise=False, actor="dpo")
            kept = await erase_person(conn, "s3", pseudonymise=True, actor="dpo")
            assert [tuple(r) for r in await conn.fetch(faces)] == [("q", kept["pseudonym"]), ("r", None)]
        finally:
            await conn.close()

    asyncio.run(main())


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def _page(name: str, **context) -> str:
    return templates.get_template(name).render(user=None, path="/attendance", site="test", csrf_token="t",
                                               filters={}, **context)


def test_exports_and_dashboard_show_the_evidence(fresh_database):
    _run(fresh_database, None, [SIGHTINGS])

    async def main():
        conn = await asyncpg.connect(fresh_database)
        try:
            session_id = await conn.fetchval("SELECT id FROM class_session WHERE room_id = 'A101'")
            listing = _csv(await export_session(conn, session_id, "csv"))
            header, rows = listing[0], {r[0]: dict(zip(listing[0], r)) for r in listing[1:]}
            assert header[-5:] == ["door_recognitions", "first_door", "room_tracks", "room_face", "resolved_by"]
            assert {k: rows["s1"][k] for k in ("status", "door_recognitions", "first_door", "room_tracks",
                                                "room_face", "minutes_present")} == {
                "status": "unconfirmed", "door_recognitions": "1", "first_door": "2026-11-02 09:02:00",
                "room_tracks": "0", "room_face": "no", "minutes_present": "0.0"}
            assert rows["s3"]["room_face"] == "yes" and rows["s4"]["door_recognitions"] == "2"
            register = _csv(await export_course(conn, "CS101", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "csv"))
            by_student = {r[0]: dict(zip(register[0], r)) for r in register[1:]}
            assert by_student["s1"]["2026-11-02 09:00 A101"] == "U" and by_student["s1"]["unconfirmed"] == "1"
            assert by_student["s1"]["attendance_rate"] == "0.0", "unconfirmed is not attended"
            mine = _csv(await export_student(conn, "s4", dt.date(2026, 11, 1), dt.date(2026, 11, 30), "csv"))
            record = dict(zip(mine[0], mine[1]))
            assert record["status"] == "unconfirmed" and record["door_recognitions"] == "2"
            assert record["first_door"] == "2026-11-02 09:00:00" and record["room_tracks"] == "1"

            session = await queries.session(conn, session_id)
            assert session["unconfirmed"] == 2 and session["attended"] == 2
            page = _page("session.html", s=session)
            assert '2 unconfirmed</span>' in page
            row = page.split('data-person="s4"')[1].split("</tr>")[0]
            assert "unconfirmed" in row and "door ×2 (09:00:00)" in row and "room 1 track, 5.0 min" in row
            row = page.split('data-person="s3"')[1].split("</tr>")[0]
            assert "no door" in row and "face in the room" in row
            student = await queries.student_record(conn, "s1", courses=None)
            assert student["attended"] == 0
            page = _page("student.html", r=student)
            assert "door ×1 (09:02:00)" in page and "not seen in the room" in page
        finally:
            await conn.close()

    asyncio.run(main())


def test_through_the_broker_the_event_carries_the_evidence(stack, fresh_database):
    """Recognition and presence messages on the real broker, the writer in-process (the clock closes the
    past session): the rows and the finalised attendance.v1 events carry the evidence."""
    bootstrap, config = stack.kafka_bootstrap_servers, _config(None)
    t0 = T0.timestamp()
    presence, recognitions = Stream(), Stream()
    door_only = recognition_event(room_id="A101", camera_id="door-A101", track_id="f1", person_id="s1",
                                  frame_time=t0 + 120)
    handed = recognition_event(room_id="A101", camera_id="door-A101", track_id="f2", person_id="s2", frame_time=t0)
    for event in (handed, door_only, recognition_event(room_id="A101", camera_id="door-A101", track_id="f3",
                                                       person_id=None, frame_time=t0 + 60)):
        recognitions.add(event["camera_id"], event)
    room = dict(room_id="A101", camera_id="room-A101", track_id="t2", person_id="s2", first_seen=t0 + 4)
    face = presence_event(kind="identity", frame_time=t0 + 30, previous_person_id="s2", **room)
    face["identity_source"] = "face"  # a face seen by the room camera confirms the handoff
    for event in (presence_event(kind="enter", frame_time=t0 + 4, recognition_event_id=handed["event_id"], **room),
                  face, presence_event(kind="exit", frame_time=t0 + 5400, **room)):
        presence.add(event["camera_id"], event)

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        await produce(bootstrap, config.kafka.topics.presence.name, encoded(presence))
        await produce(bootstrap, config.kafka.topics.recognitions.name, encoded(recognitions))
        await run_writer_until_caught_up(config, fresh_database, bootstrap)
        conn = await asyncpg.connect(fresh_database)
        try:
            rows = {r["person_id"]: r for r in await conn.fetch("SELECT * FROM attendance")}
        finally:
            await conn.close()
        topic = config.kafka.topics.attendance.name
        events = [decode(topic, v) for v in await read_topic(bootstrap, topic)]
        return rows, {e["person_id"]: e for e in events if e["change"] == "finalised"}

    rows, finalised = asyncio.run(main())
    assert {p: r["status"] for p, r in rows.items()} == {"s1": "unconfirmed", "s2": "present", "s3": "absent",
                                                         "s4": "absent"}
    assert _evidence(rows["s1"]) == (1, 2, 0, 0.0, False)
    assert _evidence(rows["s2"]) == (1, 0, 1, 89.9, True)
    assert finalised["s1"]["schema_version"] == "1.1"
    assert (finalised["s1"]["status"], finalised["s1"]["unconfirmed"]) == ("absent", True)
    assert finalised["s2"]["evidence"] == {"door_recognitions": 1, "first_door_at": "2026-11-02T09:00:00.000Z",
                                           "room_tracks": 1, "room_face": True}
    assert finalised["s3"]["evidence"] == {"door_recognitions": 0, "first_door_at": None, "room_tracks": 0,
                                           "room_face": False}


def test_migration_0005_keeps_rows_written_before_and_backfills_their_evidence(fresh_database, tmp_path, monkeypatch):
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(db.MIGRATIONS_DIR.glob("000[1-4]_*.sql")):
        shutil.copy(path, earlier / path.name)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", earlier)
    db.migrate(fresh_database)

    async def before():  # what the writer before 0005 left: a door recognition and a room track of s1
        conn = await asyncpg.connect(fresh_database)
        try:
            await conn.execute("""
                INSERT INTO room (id) VALUES ('A101');
                INSERT INTO camera (id, role, room_id, url, analysis_fps) VALUES ('door-A101', 'door', 'A101', 'x', 5),
                                                                                ('room-A101', 'room', 'A101', 'x', 4);
                INSERT INTO course (id) VALUES ('CS101');
                INSERT INTO person (id, display_name, kind) VALUES ('s1', 's1', 'student');
                INSERT INTO class_session (id, course_id, room_id, starts_at, ends_at, state)
                    VALUES (7, 'CS101', 'A101', '2026-11-02 09:00Z', '2026-11-02 10:30Z', 'closed');
                INSERT INTO presence_track (session_id, camera_id, track_id, person_id, first_seen, last_seen,
                        first_frame, first_event_id, last_frame, last_event_id)
                    VALUES (7, 'door-A101', 'f1', 's1', '2026-11-02 09:01Z', '2026-11-02 09:01Z', '2026-11-02 09:01Z',
                            gen_random_uuid(), '2026-11-02 09:01Z', gen_random_uuid()),
                           (7, 'room-A101', 't1', 's1', '2026-11-02 09:02Z', '2026-11-02 09:05Z', '2026-11-02 09:02Z',
                            gen_random_uuid(), '2026-11-02 09:05Z', gen_random_uuid());
                INSERT INTO attendance (session_id, person_id, status, first_seen, last_seen, presence_s)
                    VALUES (7, 's1', 'absent', '2026-11-02 09:01Z', '2026-11-02 09:05Z', 180);""")
        finally:
            await conn.close()

    asyncio.run(before())
    monkeypatch.undo()
    assert db.migrate(fresh_database).applied[0] == "0005_attendance_evidence"

    async def after():
        conn = await asyncpg.connect(fresh_database)
        try:
            row = await conn.fetchrow("SELECT * FROM attendance")
            sources = {r["track_id"]: r["source"] for r in await conn.fetch("SELECT * FROM presence_track")}
            policy = await conn.fetchval("SELECT door_only FROM course")
            return row, sources, policy
        finally:
            await conn.close()

    row, sources, policy = asyncio.run(after())
    assert row["status"] == "absent", "a final status written before is left as it was"
    assert _evidence(row) == (1, 1, 1, 3.0, False)
    assert sources == {"f1": "door", "t1": "room"} and policy == "unconfirmed"


def test_faculty_resolve_an_unconfirmed_record(fresh_database):
    _run(fresh_database, None, [SIGHTINGS])

    async def main():
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        try:
            session_id = await conn.fetchval("SELECT id FROM class_session WHERE room_id = 'A101'")
            with pytest.raises(RollcallError, match="resolved as present, late, absent"):
                await resolve_unconfirmed(conn, session_id, "s1", "excused", actor="prof")
            with pytest.raises(RollcallError, match="is present, not unconfirmed"):
                await resolve_unconfirmed(conn, session_id, "s2", "absent", actor="prof")
            resolved = await resolve_unconfirmed(conn, session_id, "s1", "present", actor="prof")
            assert (resolved["status"], resolved["resolved_by"], resolved["door_recognitions"]) == ("present", "prof", 1)
            event_id, payload = [(o["event_id"], json.loads(o["payload"])) for o in await conn.fetch(
                "SELECT event_id, payload FROM attendance_outbox ORDER BY id DESC LIMIT 1")][0]
            event = attendance_event(event_id, payload)
            assert (event["change"], event["person_id"], event["status"], event["unconfirmed"]) == (
                "updated", "s1", "present", False)
            # a later sighting recomputes the record: the evidence changes, the decision stays
            await store.write_batch(conn, "g", [_door("s1", "d9", 50)], {}, {}, store.TimetableCache())
            row = await conn.fetchrow("SELECT * FROM attendance WHERE session_id = $1 AND person_id = 's1'", session_id)
            assert (row["status"], row["door_recognitions"]) == ("present", 2)
            actions = [(r["action"], r["subject"]) for r in await conn.fetch(
                "SELECT action, subject FROM audit_log WHERE action = 'attendance.resolve'")]
            assert actions == [("attendance.resolve", f"{session_id}/s1")]
            listing = _csv(await export_session(conn, session_id, "csv"))
            assert {r[0]: (r[3], r[-1]) for r in listing[1:]}["s1"] == ("present", "prof")
        finally:
            await conn.close()

    asyncio.run(main())


PASSWORDS = {"admin": "admin-password-1", "turing": "turing-password-1", "macron": "macron-password-1",
             "ardern": "ardern-password-1"}


def test_the_session_page_resolves_an_unconfirmed_record(stack):
    """The dashboard (uvicorn, real PostgreSQL): the session page offers the decision for an unconfirmed
    record; faculty of the course make it through the form; a student may not; a record that is not
    unconfirmed is refused."""
    config = load_config(EXAMPLE_CONFIG, environ={})
    url = create_database(stack, "test_resolve")
    testing.prepare_database(url, config)
    testing.add_accounts(url, passwords=PASSWORDS)

    async def unconfirmed_session() -> int:  # macron recognised at A101's door, never seen in the room
        conn = await asyncpg.connect(url)
        await store.prepare(conn)
        try:
            starts = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
            session = await open_session(conn, course_id="CS101", room_id="A101", actor="prof-turing",
                                         starts_at=starts, minutes=60)
            at = starts + dt.timedelta(minutes=5)
            await store.write_batch(conn, "g", [(str(uuid.uuid4()), "recognition", "A101", "door-a101",
                                                 "f1", "macron", at, at, at, None, None, "test", 0, 0)],
                                    {}, {}, store.TimetableCache())
            await close_session(conn, session["id"], actor="prof-turing")
            return session["id"]
        finally:
            await conn.close()

    session_id = asyncio.run(unconfirmed_session())
    app = create_app(config, database_url=url, kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                     camera_urls={c.id: c.url for c in config.cameras}, secret_key="s" * 48)
    with testing.serve_in_thread(app) as served:
        faculty = testing.login(served.url, "turing", PASSWORDS["turing"])
        page = faculty.get(f"/attendance/sessions/{session_id}").text
        action = f'/api/sessions/{session_id}/attendance/macron/resolve'
        assert f'action="{action}"' in page and "1 unconfirmed" in page
        student = testing.login(served.url, "macron", PASSWORDS["macron"])
        assert student.post(action, json={"status": "present"}).status_code == 403
        assert faculty.post(action, json={"status": "maybe"}).status_code == 400
        answer = faculty.post(action, data={"status": "late", "csrf_token": faculty.csrf,
                                            "next": f"/attendance/sessions/{session_id}"})
        assert answer.status_code == 303
        record = {a["person_id"]: a for a in faculty.get(f"/api/sessions/{session_id}").json()["attendance"]}
        assert (record["macron"]["status"], record["macron"]["resolved_by"]) == ("late", "turing")
        assert record["macron"]["door_recognitions"] == 1
        again = faculty.post(action, json={"status": "absent"})
        assert again.status_code == 400 and "not unconfirmed" in again.json()["error"]
        assert f'action="{action}"' not in faculty.get(f"/attendance/sessions/{session_id}").text


def test_the_scenario_score_does_not_count_unconfirmed_as_attended():
    # someone who turned back at the door (unconfirmed) is no false present; a lost arrival is missed
    truth = {"expected_present": ["a", "b"], "people": [{"id": "a", "enrolled": True}, {"id": "b", "enrolled": True},
                                                        {"id": "c", "enrolled": True}]}
    rows = [{"person_id": "a", "status": "present", "presence_s": 600.0},
            {"person_id": "b", "status": "unconfirmed", "presence_s": 3.0},
            {"person_id": "c", "status": "unconfirmed", "presence_s": 0.0}]
    score = score_attendance(rows, truth)
    assert (score["precision"], score["recall"], score["missed"], score["wrongly_present"]) == (1.0, 0.5, ["b"], [])
