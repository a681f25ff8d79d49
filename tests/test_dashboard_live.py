"""The dashboard against the real broker, PostgreSQL and RTSP server: events published on Kafka reach
SSE clients (filtered by role), the presence board and the occupancy history; overlay events are drawn
on the camera's own video; the review queue, enrolment with photos, and sessions opened, closed and
exported by hand."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import cv2
import httpx
import numpy as np
import pytest

from infra.devstack import dashboard as testing
from tests import dashboard_kit as kit
from infra.foundation.paths import PROJECT_ROOT
from infra.foundation.config import EXAMPLE_CONFIG, config_from_dict, load_config
from infra.devstack import stack as embedded
from infra.scenario.mounts import demo_mounts
from dashboard.video import COLOURS, ZONE_COLOUR, draw_overlay

PHOTOS = PROJECT_ROOT / "infra" / "scenarios" / "photos"


@pytest.fixture(scope="module")
def config():

    raw = load_config(EXAMPLE_CONFIG, environ={}).model_dump(exclude={"source"})
    raw["dashboard"]["processor_metrics_urls"] = []
    # the tests open one-off CS101 sessions in A101 by hand: other courses' A101 slots would refuse them (409)
    # on the days and hours those slots run, so the tests would pass or fail by the calendar
    raw["timetable"] = [t for t in raw["timetable"] if t["room"] != "A101" or t["course"] == "CS101"]
    return config_from_dict(raw, source=EXAMPLE_CONFIG, environ={})


@pytest.fixture(scope="module")
def served(stack, config):

    embedded.set_rtsp_mounts(demo_mounts(config))  # /default/door, /default/room: the rendered scenario
    with kit.served_dashboard(stack, config, "test_dash", secret_key="k" * 48,
                              camera_urls={c.id: c.url for c in config.cameras}, wait_for_hub=True) as server:
        yield server


class SseReader:
    """Reads an SSE stream over a plain socket in a thread; ``events`` collects (event, data) as they arrive.
    ``close()`` shuts the socket down, so the server sees the client leave at once."""

    def __init__(self, client: httpx.Client, path: str):
        import socket

        self.events: list[tuple[str, dict]] = []
        url = httpx.URL(str(client.base_url))
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        self._sock = socket.create_connection((url.host, url.port), timeout=60)
        self._sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nCookie: {cookie}\r\n"
                           "Accept: text/event-stream\r\n\r\n".encode())
        self._file = self._sock.makefile("rb")
        self.status = int(self._file.readline().split()[1])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        name = None
        try:
            for raw in self._file:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    self.events.append((name, json.loads(line[6:])))
        except (OSError, ValueError):  # closed by the test
            pass

    def ids(self) -> list[str]:
        return [data.get("event_id") for _, data in self.events]

    def close(self) -> None:
        import socket

        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _publish(served, *pairs):
    asyncio.run(testing.publish(served.bootstrap, list(pairs)))


def test_events_on_kafka_reach_the_feed_board_and_history(served, config):
    topics = config.kafka.topics
    hub = served.services.hub
    # Faculty see a room's live data while one of their sessions runs there: a CS101 session in A101 now.
    running = kit.db(served, """INSERT INTO class_session (course_id, room_id, starts_at, ends_at, state)
                                VALUES ('CS101', 'A101', now() - interval '5 minutes', now() + interval '1 hour', 'open')
                                RETURNING id""")[0]["id"]
    admin = SseReader(kit.login(served, "admin"), "/api/events/stream")
    faculty = SseReader(kit.login(served, "turing"), "/api/events/stream?types=recognition,presence")
    testing.wait_for(lambda: len(hub.subscribers) >= 2, what="two live clients")
    assert admin.status == faculty.status == 200
    # An event of a room the faculty member does not teach in: the admin gets it, they do not.
    elsewhere = testing.make_event("presence", room_id="B202", camera_id="room-b202", track_id="z9")
    _publish(served, (topics.presence.name, elsewhere))
    testing.wait_for(lambda: elsewhere["event_id"] in admin.ids(), what="the B202 event at the admin")
    recognition = testing.make_event("recognition", track_id="d1", person_id="macron")
    enter = testing.make_event("presence", kind="enter", track_id="r1", person_id="macron")
    unknown = testing.make_event("presence", kind="enter", track_id="r2", person_id=None, identity="unknown",
                                 identity_source="none")
    counted = testing.make_event("occupancy", people=2, people_avg=1.5, known=1, unknown=1)
    _publish(served, (topics.recognitions.name, recognition), (topics.presence.name, enter),
             (topics.presence.name, unknown), (topics.occupancy.name, counted))
    wanted = {recognition["event_id"], enter["event_id"], unknown["event_id"]}
    testing.wait_for(lambda: wanted <= set(faculty.ids()), what="the A101 events at the faculty client")
    testing.wait_for(lambda: wanted | {counted["event_id"]} <= set(admin.ids()), what="every event at the admin")
    assert elsewhere["event_id"] not in faculty.ids()  # it was read before these: the filter dropped it
    assert counted["event_id"] not in faculty.ids()  # occupancy not asked for
    assert dict(admin.events)["recognition"]["person_id"] == "macron"

    client = kit.login(served, "turing")
    board = client.get("/api/presence").json()["rooms"]
    assert [room["room_id"] for room in board] == ["A101"]
    tracks = {t["track_id"]: t for t in board[0]["tracks"]}
    assert tracks["r1"]["person_id"] == "macron" and tracks["r1"]["identity"] == "known"
    assert tracks["r2"]["identity"] == "unknown"
    assert board[0]["occupancy"]["people"] == 2
    history = client.get("/api/occupancy/A101").json()["points"]
    assert history[-1] == {"t": counted["frame_time"], "people": 2, "people_avg": 1.5, "known": 1, "unknown": 1}
    recent = [e["event_id"] for e in client.get("/api/events/recent").json()["events"]]
    assert wanted <= set(recent) and elsewhere["event_id"] not in recent

    gone = testing.make_event("presence", kind="exit", track_id="r1", person_id="macron")
    _publish(served, (topics.presence.name, gone))
    testing.wait_for(lambda: gone["event_id"] in admin.ids(), what="the exit event")
    tracks = client.get("/api/presence").json()["rooms"][0]["tracks"]
    assert [t["track_id"] for t in tracks] == ["r2"]
    # A malformed message is counted and skipped; the feed goes on.
    asyncio.run(_raw(served.bootstrap, topics.presence.name, b"{not json"))
    after = testing.make_event("presence", kind="update", track_id="r2", person_id=None, identity="unknown",
                               identity_source="none")
    _publish(served, (topics.presence.name, after))
    testing.wait_for(lambda: after["event_id"] in admin.ids(), what="the event after a malformed one")
    assert hub.malformed >= 1
    admin.close()
    faculty.close()
    testing.wait_for(lambda: not hub.subscribers, what="closed clients to unsubscribe")
    kit.db(served, "DELETE FROM class_session WHERE id = $1", running)


async def _raw(bootstrap, topic, value):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"room-a101")
    finally:
        await producer.stop()


def test_draw_overlay_boxes_labels_zones():

    image = np.full((720, 1280, 3), 30, np.uint8)
    overlay = testing.make_event("overlay", objects=[
        {"track_id": "7", "kind": "person", "box": {"x1": 200, "y1": 200, "x2": 800, "y2": 600},
         "label": "Emmanuel Macron", "person_id": "macron"},
        {"track_id": "8", "kind": "person", "box": {"x1": 900, "y1": 100, "x2": 1200, "y2": 500},
         "label": "unknown", "person_id": None}])
    zone = [(45, 353), (301, 353), (346, 490), (6, 490)]
    out = draw_overlay(image, overlay, width=640, title="A101 room", state="STREAMING", zones=[zone])
    assert out.shape == (360, 640, 3)
    assert tuple(out[300, 250]) == COLOURS["known"]  # bottom edge of the known box, scaled by 0.5
    assert tuple(out[150, 450]) == COLOURS["unknown"]  # left edge of the unknown one
    assert tuple(out[176, 80]) == ZONE_COLOUR  # the entry zone's top edge
    assert tuple(out[200, 300]) == (30, 30, 30)  # inside a box: the picture itself
    placeholder = draw_overlay(None, None, width=640, title="A101 door", state="CONNECTING")
    assert placeholder.shape == (360, 640, 3)


def _green_ratio(jpeg: bytes) -> float:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    edge = image[101:103, 110:390].reshape(-1, 3).astype(int)  # the top edge of the box below, at 640 px
    b, g, r = edge[:, 0], edge[:, 1], edge[:, 2]
    return float(np.mean((g > r + 60) & (g > b + 60)))


def _frames(response: httpx.Response):
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        while True:
            start = buffer.find(b"\xff\xd8")
            end = buffer.find(b"\xff\xd9", start + 2)
            if start < 0 or end < 0:
                break
            yield buffer[start:end + 2]
            buffer = buffer[end + 2:]


def test_overlay_events_drawn_on_the_cameras_own_video(served, config):
    admin = kit.login(served, "admin")
    feed = served.services.video.feeds["room-a101"]
    overlay = dict(objects=[{"track_id": "7", "kind": "person", "box": {"x1": 220, "y1": 202, "x2": 780, "y2": 600},
                             "label": "Emmanuel Macron", "person_id": "macron"}])
    stop = threading.Event()

    def keep_publishing():  # the processor sends one per analysed frame; the dashboard keeps the latest 3 s
        while not stop.is_set():
            _publish(served, (config.kafka.topics.overlays.name, testing.make_event("overlay", **overlay)))
            stop.wait(0.5)

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    with admin.stream("GET", "/api/video/room-a101/mjpeg", timeout=httpx.Timeout(60, read=60)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        publisher.start()
        try:
            found = None
            for jpeg in _frames(response):
                if feed.state == "STREAMING" and served.services.hub.latest_overlay("room-a101") \
                        and _green_ratio(jpeg) > 0.8:
                    found = jpeg
                    break
        finally:
            stop.set()
    assert found is not None
    image = cv2.imdecode(np.frombuffer(found, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)
    assert float(image[150:350].std()) > 10  # real video under the boxes, not the grey placeholder
    assert feed.rendered > 0
    # The same picture as a snapshot; WebRTC answers an offer with a video track (the browser test plays it).
    snapshot = admin.get("/api/video/room-a101/snapshot.jpg")
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
    assert admin.get("/api/video/nope/snapshot.jpg").status_code == 404
    bad = admin.post("/api/video/room-a101/offer", json={"sdp": 3})
    assert bad.status_code == 400 and "offer" in bad.json()["error"]


def test_review_queue_marks_a_suspected_spoof(served):
    vector = np.ones(128) / np.sqrt(128)
    spoof = kit.db(served, """INSERT INTO review_face (camera_id, track_id, event_id, captured_at, model_pack,
           embedding, embedding_dim, crop_jpeg, quality, expires_at, liveness, liveness_score, best_person_id)
           VALUES ('door-a101', '9101', $1, now(), 'open', $2, 128, $3, 0.7, now() + interval '7 days', 'suspect',
                   0.12, 'macron') RETURNING id""", str(uuid.uuid4()), vector.tolist(),
                   cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes())[0]["id"]
    admin = kit.login(served, "admin")
    item = next(i for i in admin.get("/api/review").json()["items"] if i["id"] == spoof)
    assert item["suspected_spoof"] is True and item["liveness_score"] == pytest.approx(0.12)
    page = admin.get("/review").text
    card = page[page.index(f'data-review="{spoof}"'):]
    card = card[:card.index("</form>")]
    assert "Suspected spoof" in card and "liveness 0.12" in card and "It showed" in card
    assert 'name="person_id" required value=""' in card  # the pictured student is not offered as who it was
    assert admin.post(f"/api/review/{spoof}/reject").status_code == 200


def test_review_queue_accept_and_reject(served):
    rng = np.random.default_rng(1)
    ids = []
    for track in ("9001", "9002", "9003"):
        vector = rng.normal(size=128)
        vector /= np.linalg.norm(vector)
        ids.append(kit.db(served, """INSERT INTO review_face (camera_id, track_id, event_id, captured_at, model_pack,
               embedding, embedding_dim, crop_jpeg, quality, expires_at)
               VALUES ('door-a101', $1, $2, now(), 'open', $3, 128, $4, 0.8, now() + interval '7 days') RETURNING id""",
                          track, str(uuid.uuid4()), vector.tolist(),
                          cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes())[0]["id"])
    admin = kit.login(served, "admin")
    queue = admin.get("/api/review").json()["items"]
    assert set(ids) <= {item["id"] for item in queue}
    assert admin.get(f"/api/review/{ids[0]}/crop.jpg").content[:2] == b"\xff\xd8"
    page = admin.get("/review")
    assert f'data-review="{ids[0]}"' in page.text
    # No consent: refused.
    response = admin.post(f"/api/review/{ids[0]}/accept", json={"person_id": "visitor-sunak", "new_person": True})
    assert response.status_code == 400 and "consent" in response.json()["error"]
    # Accepted as a new person through the page's form: redirected back with a message.
    response = admin.post(f"/api/review/{ids[0]}/accept", data={
        "csrf_token": admin.csrf, "next": "/review", "new_person": "yes", "person_id": "visitor-sunak",
        "name": "Rishi Sunak", "consent": "yes"})
    assert response.status_code == 303 and response.headers["location"] == "/review"
    assert "face accepted as visitor-sunak" in admin.get("/review").text
    row = kit.db(served, "SELECT status, decided_by, person_id FROM review_face WHERE id = $1", ids[0])[0]
    assert dict(row) == {"status": "accepted", "decided_by": "admin", "person_id": "visitor-sunak"}
    enrolment = kit.db(served, """SELECT f.source, f.consent_by, f.embedding_dim, p.display_name FROM face_enrolment f
                                  JOIN person p ON p.id = f.person_id WHERE f.person_id = 'visitor-sunak'""")
    assert [dict(r) for r in enrolment] == [{"source": "review", "consent_by": "admin", "embedding_dim": 128,
                                             "display_name": "Rishi Sunak"}]
    # Deciding twice, or for a person who does not exist, is refused with one line.
    again = admin.post(f"/api/review/{ids[0]}/reject")
    assert again.status_code == 409 and "accepted already" in again.json()["error"]
    missing = admin.post(f"/api/review/{ids[1]}/accept", json={"person_id": "nobody", "consent": "yes"})
    assert missing.status_code == 404 and "no person 'nobody'" in missing.json()["error"]
    taken = admin.post(f"/api/review/{ids[1]}/accept", json={"person_id": "macron", "new_person": True, "consent": "yes"})
    assert taken.status_code == 409
    existing = admin.post(f"/api/review/{ids[1]}/accept", json={"person_id": "visitor-sunak", "consent": "yes"})
    assert existing.status_code == 200 and existing.json()["new_person"] is False
    rejected = admin.post(f"/api/review/{ids[2]}/reject")
    assert rejected.status_code == 200
    row = kit.db(served, "SELECT status, crop_jpeg FROM review_face WHERE id = $1", ids[2])[0]
    assert row["status"] == "rejected" and row["crop_jpeg"] is None  # the crop is not kept
    assert {item["id"] for item in admin.get("/api/review").json()["items"]}.isdisjoint(ids)


def test_enrol_with_photos_gives_a_reason_per_photo(served, tmp_path):
    admin = kit.login(served, "admin")
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("hello")
    files = [("photos", ("macron_2014.jpg", (PHOTOS / "macron_2014.jpg").read_bytes(), "image/jpeg")),
             ("photos", ("notes.txt", not_a_photo.read_bytes(), "text/plain")),
             ("photos", ("again.jpg", (PHOTOS / "macron_2014.jpg").read_bytes(), "image/jpeg"))]
    refused = admin.post("/api/people", data={"person_id": "macron", "name": "Emmanuel Macron"}, files=files)
    assert refused.status_code == 400 and "consent" in refused.json()["error"]
    response = admin.post("/api/people", data={"person_id": "macron", "name": "Emmanuel Macron", "consent": "yes"},
                          files=files)
    assert response.status_code == 201, response.text
    report = response.json()
    assert [a["photo"] for a in report["accepted"]] == ["macron_2014.jpg"]
    assert {r["photo"]: r["code"] for r in report["rejected"]} == {"notes.txt": "not_an_image", "again.jpg": "duplicate"}
    rows = kit.db(served, "SELECT source, consent_by FROM face_enrolment WHERE person_id = 'macron'")
    assert [dict(r) for r in rows] == [{"source": "dashboard", "consent_by": "admin"}]
    people = {p["id"]: p for p in admin.get("/api/people").json()["people"]}
    assert people["macron"]["display_name"] == "Emmanuel Macron" and people["macron"]["enrolments"] == 1
    bad = admin.post("/api/people", data={"person_id": "bad id!", "consent": "yes"}, files=files[:1])
    assert bad.status_code == 400 and "is not valid" in bad.json()["error"]


def test_sessions_opened_closed_and_exported_by_hand(served):
    faculty = kit.login(served, "turing")
    opened = faculty.post("/api/sessions", json={"course": "CS101", "room": "A101", "minutes": 60})
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["session_id"]
    kit.db(served, """INSERT INTO attendance (session_id, person_id, status, first_seen, last_seen, presence_s)
                   VALUES ($1, 'macron', 'present', now(), now(), 1500)""", session_id)
    detail = faculty.get(f"/api/sessions/{session_id}").json()
    assert detail["state"] == "open" and detail["attended"] == 1 and detail["roster"] == 3
    statuses = {a["person_id"]: a["status"] for a in detail["attendance"]}
    assert statuses == {"macron": "present", "ardern": None, "obama": None}
    listed = faculty.get("/api/sessions", params={"course": "CS101", "state": "open"}).json()["sessions"]
    assert session_id in [s["id"] for s in listed]
    assert faculty.get("/api/sessions", params={"from": "yesterday"}).status_code == 400
    page = faculty.get("/attendance", params={"state": "open"})
    assert f'data-session="{session_id}"' in page.text
    # Closed through the page's form.
    closed = faculty.post(f"/api/sessions/{session_id}/close", data={"csrf_token": faculty.csrf,
                                                                     "next": f"/attendance/sessions/{session_id}"})
    assert closed.status_code == 303
    assert faculty.get(f"/api/sessions/{session_id}").json()["state"] == "closed"
    again = faculty.post(f"/api/sessions/{session_id}/close")
    assert again.status_code in (400, 409) and "closed" in again.json()["error"]
    export = faculty.get(f"/api/sessions/{session_id}/export", params={"format": "csv"})
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    assert "macron" in export.text
    xlsx = faculty.get(f"/api/sessions/{session_id}/export", params={"format": "xlsx"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert faculty.get(f"/api/sessions/{session_id}/export", params={"format": "pdf"}).status_code == 400
    # The student sees the session in their own record.
    student = kit.login(served, "macron")
    record = student.get("/api/students/macron").json()
    # Closing finalised it from the sightings (the writer's rules): nobody was seen, so absent.
    assert [(r["session_id"], r["status"]) for r in record["records"]] == [(session_id, "absent")]
    assert student.get("/api/students/macron/export", params={"format": "csv"}).status_code == 200
    rates = faculty.get("/api/analytics/attendance").json()
    assert any(s["id"] == session_id for s in rates["sessions"]) and "CS101" in rates["courses"]


def test_erase_a_person(served):
    admin = kit.login(served, "admin")
    student = kit.login(served, "ardern")
    assert admin.get("/api/students/ardern/export", params={"format": "csv", "from": "2026-01-02", "to": "2026-01-01"}
                     ).status_code == 400
    course = admin.get("/api/courses/CS101/export", params={"format": "csv"})
    assert course.status_code == 200 and "ardern" in course.text
    response = admin.post("/api/people/ardern/erase", data={"csrf_token": admin.csrf, "next": "/people"})
    assert response.status_code == 303
    assert "ardern erased" in admin.get("/people").text
    person = kit.db(served, "SELECT id, pseudonymised_at FROM person WHERE display_name LIKE 'erased-%'")
    assert len(person) == 1 and person[0]["pseudonymised_at"] is not None  # attendance kept under a pseudonym
    assert not kit.db(served, "SELECT 1 FROM person WHERE id = 'ardern'")
    assert not kit.db(served, "SELECT 1 FROM dashboard_user WHERE username = 'ardern'")
    assert student.get("/api/me").status_code == 401  # their session is gone with their account
    assert admin.post("/api/people/ardern/erase").status_code == 404
