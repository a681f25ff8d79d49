"""The dashboard's campus snapshot (dashboard/campus_state.py, kept CAMPUS_CACHE_S = 5 s) is read again
at once after an admin's roster, timetable, course, room or camera edit in the same process: a faculty member's
scope and the pages follow on the very next request, not seconds later (the dashboard on its own database
of the session's PostgreSQL, over HTTP; each check comes well within the 5 s the snapshot would last)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests import dashboard_kit as kit


@pytest.fixture(scope="module")
def served(stack):
    with kit.served_example(stack, "test_campus_cache", secret_key="c" * 48) as server:
        yield server


def _scope(client) -> tuple[list[str], list[str]]:
    me = client.get("/api/me").json()
    return me["courses"], me["rooms"]


def test_a_roster_edit_changes_a_faculty_scope_on_the_next_request(served):
    faculty, admin = kit.login(served, "turing"), kit.login(served, "admin")
    courses, _ = _scope(faculty)  # the snapshot read now: it would last 5 s
    assert "CS105" not in courses
    added = admin.post("/setup/rosters", json={"course_id": "CS105", "person_id": "prof-turing", "role": "faculty"})
    assert added.status_code == 200, added.text
    assert "CS105" in _scope(faculty)[0]
    removed = admin.post("/setup/rosters/remove", json={"course_id": "CS105", "person_id": "prof-turing"})
    assert removed.status_code == 200, removed.text
    assert _scope(faculty)[0] == courses


def test_a_timetable_edit_and_import_change_a_faculty_rooms_on_the_next_request(served):
    faculty, admin = kit.login(served, "turing"), kit.login(served, "admin")
    assert admin.post("/setup/rooms", json={"id": "C303", "name": "Lab"}).status_code == 201
    _, rooms = _scope(faculty)
    assert "C303" not in rooms
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    slot = {"course_id": "CS101", "room_id": "C303", "day": day, "start": "10:00", "end": "11:00"}
    assert admin.post("/setup/timetable", json=slot).status_code == 200
    assert "C303" in _scope(faculty)[1]
    [slot_id] = [r[0] for r in kit.db(served, "SELECT id FROM timetable_slot WHERE room_id = 'C303'")]
    assert admin.post(f"/setup/timetable/{slot_id}/remove", json={}).status_code == 200
    assert "C303" not in _scope(faculty)[1]
    # the CSV import's confirmation writes the same way
    data = f"course_id,room_id,day,start,end\nCS101,C303,{day},12:00,13:00\n"
    confirmed = admin.post("/setup/timetable/import/confirm", json={"data": data})
    assert confirmed.status_code == 200, confirmed.text
    assert "C303" in _scope(faculty)[1]


def test_a_new_course_is_offered_on_the_accounts_page_at_once(served):
    admin, _ = kit.login_with_token(served, "admin")
    offered = re.compile(r"<option\s*>MA900</option>")
    assert not offered.search(admin.get("/accounts").text)  # the snapshot read now: it would last 5 s
    assert admin.post("/setup/courses", json={"id": "MA900", "name": "Topology"}).status_code == 201
    assert offered.search(admin.get("/accounts").text)


def test_a_camera_added_then_deleted_shows_on_the_health_list_at_once(served):
    admin = kit.login(served, "admin")

    def listed() -> set[str]:
        response = admin.get("/api/health")
        assert response.status_code == 200, response.text
        return {camera["id"] for camera in response.json()["cameras"]}

    assert "door-cache" not in listed()  # the snapshot read now: it would last 5 s
    added = admin.post("/setup/cameras", json={"id": "door-cache", "role": "door", "room": "A101",
                                               "url": "rtsp://127.0.0.1:9/nothing", "enabled": "yes"})
    assert added.status_code == 201, added.text
    assert "door-cache" in listed()
    deleted = admin.post("/setup/cameras/door-cache/delete", json={"confirm": "door-cache"})
    assert deleted.status_code == 200, deleted.text
    assert "door-cache" not in listed()
