"""The campus as PostgreSQL holds it, followed by what runs: an admin deletes a camera and a door in a real
headless Chromium (after the browser's confirmation; a camera a door links is refused, naming the door; a
deleted camera's past events stay); the health, live and video pages list a camera added in the dashboard
and drop it once deleted; a processor outside a group follows the camera table (a camera added, disabled,
deleted, an entry zone redrawn) without a restart; a camera URL that reads local files is refused unless
the settings allow it. Against the dashboard on its own database of the session's PostgreSQL; the tests
run in order on one database. Unit tests of the pure parts first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import html
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from dashboard.camera_probe import check_local_files
from dashboard.campus_state import Camera, Door
from dashboard.forms import form_number
from dashboard.services import Problem
from dashboard.video import VideoHub
from infra.foundation.camera_urls import reads_local_files
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.mounts import render_cached
from processor.group.catalogue import Catalogue, CatalogueWatcher
from processor.ingest import IngestManager
from processor.service import Processor
from processor.stages.room import RoomStage
from tests import dashboard_kit as kit

# ------------------------------------------------------------------------------------ pure parts


class _Numbers(BaseModel):
    model_config = ConfigDict(validate_default=True)
    late_after_min: form_number(int, 0, 1440, "minutes") = 10
    transit_min_s: form_number(float, 0, 600, "seconds", empty="refused") = 0.0
    capacity: form_number(int, 1, 100, "places", empty="none") = None


def _error(fields: dict) -> str:
    with pytest.raises(ValueError) as caught:
        _Numbers.model_validate(fields)
    return str(caught.value)


def test_a_form_number_reads_text_and_names_its_field_in_its_error():
    read = _Numbers.model_validate({"late_after_min": " 7 ", "transit_min_s": "2.345", "capacity": ""})
    assert (read.late_after_min, read.transit_min_s, read.capacity) == (7, 2.35, None)
    assert _Numbers.model_validate({"late_after_min": "", "transit_min_s": 3}).late_after_min == 10  # the default
    assert "late after min '7.5' is not a number of whole minutes" in _error({"late_after_min": "7.5"})
    assert "late after min must be between 0 and 1440 minutes" in _error({"late_after_min": "2000"})
    assert "transit min: a number of seconds is required" in _error({"transit_min_s": ""})
    assert "transit min must be between 0 and 600 seconds" in _error({"transit_min_s": "nan"})
    assert "capacity must be between 1 and 100 places" in _error({"capacity": "0"})


@pytest.mark.parametrize("url, local", [
    ("file:///etc/passwd", True), ("/var/video.mp4", True), ("concat:/a.mp4|/b.mp4", True),
    ("subfile,,start,0,end,9,,:/etc/passwd", True), ("rtsp://cam/stream", False),
    ("RTSPS://cam/stream", False), ("https://cam/live.m3u8", False), ("embedded:default/door", False)])
def test_urls_that_read_local_files_are_told_apart(url, local):
    assert reads_local_files(url) is local
    if local:
        with pytest.raises(Problem) as refused:
            check_local_files(url, allowed=False)
        assert refused.value.status == 400 and "allow_file_cameras" in refused.value.message
        check_local_files(url, allowed=True)  # the setting lets it through
    else:
        check_local_files(url, allowed=False)


def test_the_video_feeds_follow_the_campus_cameras():
    config = load_config(EXAMPLE_CONFIG, environ={})

    async def follow():
        hub = VideoHub(config, {}, lambda camera_id, at: None)
        assert hub.feeds == {}
        door = Camera("door-x", "", "door", "A101", True, "rtsp://cam/door")
        room = Camera("room-x", "Room X", "room", "A101", True, "rtsp://cam/room")
        zone = Door("A101-x", "room-x", ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0)))
        assert await hub.sync([door, room], [zone], {}) == {"added": ["door-x", "room-x"], "removed": [], "remade": []}
        room_feed = hub.feeds["room-x"]
        assert room_feed.zones == [[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)]] and hub.feeds["door-x"].zones == []
        renamed = Camera("room-x", "Room X, back", "room", "A101", True, "rtsp://cam/room")
        moved_door = Camera("door-x", "", "door", "A101", True, "rtsp://cam/door-2")
        assert await hub.sync([moved_door, renamed], [], {"room-x": "rtsp://test/room"}) == {
            "added": [], "removed": [], "remade": ["door-x", "room-x"]}  # an override of the URL counts as one
        assert hub.feeds["room-x"].url == "rtsp://test/room" and hub.feeds["door-x"].url == "rtsp://cam/door-2"
        room_feed = hub.feeds["room-x"]
        assert await hub.sync([moved_door, renamed], [zone], {"room-x": "rtsp://test/room"}) == {
            "added": [], "removed": [], "remade": []}
        assert hub.feeds["room-x"] is room_feed and room_feed.zones and room_feed.title == "Room X, back (room-x)"
        disabled = Camera("door-x", "", "door", "A101", False, "rtsp://cam/door-2")
        assert await hub.sync([disabled], [], {}) == {"added": [], "removed": ["door-x", "room-x"], "remade": []}
        assert hub.feeds == {}

    asyncio.run(follow())


def test_a_processor_outside_a_group_keeps_the_file_cameras_while_the_table_never_had_one():
    config = load_config(EXAMPLE_CONFIG, environ={})
    processor = Processor(config, database_url="unused", kafka_bootstrap_servers="unused", follow_database=True)
    processor._follow_campus(Catalogue((), (), {}))  # a database not loaded yet
    assert {c.id for c in processor.door_cameras() + processor.room_cameras()} == {"door-a101", "room-a101"}
    processor._follow_campus(Catalogue((config.cameras[0],), (), {}))
    assert [c.id for c in processor.door_cameras() + processor.room_cameras()] == [config.cameras[0].id]
    processor._follow_campus(Catalogue((), (), {}))  # the table had cameras: now it has none, nothing runs
    assert processor.door_cameras() + processor.room_cameras() == []
    grouped = Processor(config, database_url="unused", kafka_bootstrap_servers="unused", group="g",
                        follow_database=True)
    assert grouped.follow_database is False  # a member runs what its group gives it


# ------------------------------------------------------------------------------------ the served dashboard


@pytest.fixture(scope="module")
def served(stack):
    config = load_config(EXAMPLE_CONFIG, environ={})
    with kit.served_dashboard(stack, config, "test_campus_db", secret_key="c" * 48) as server:
        server.config = config
        yield server


@pytest.fixture(scope="module")
def admin_page(served):  # after the dashboard: playwright's sync API keeps an event loop in this thread
    with kit.chromium() as chromium:
        yield kit.open_logged_in(kit.new_page(chromium), served, "admin", "/setup/cameras", ready="#cameras")


def _post(client, path: str, **fields):
    return client.post(path, data={"csrf_token": client.headers["X-CSRF-Token"], **fields})


def _add_camera(admin, camera_id: str, role: str = "door", url: str = "rtsp://127.0.0.1:9/nothing"):
    response = _post(admin, "/setup/cameras", id=camera_id, role=role, room="A101", url=url, enabled="yes")
    assert response.status_code == 201, response.text[:300]


def _cameras(served) -> set[str]:
    return {r[0] for r in kit.db(served, "SELECT id FROM camera")}


def _until(predicate, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.1)


def test_only_admins_delete_and_only_with_the_confirmation(served):
    faculty = kit.login(served, "turing")
    for path, confirm in (("/setup/cameras/door-a101/delete", "door-a101"), ("/setup/doors/A101-main/delete", "A101-main")):
        assert _post(faculty, path, confirm=confirm).status_code == 403, path
    admin = kit.login(served, "admin")
    _add_camera(admin, "door-spare")
    for fields in ({}, {"confirm": "door-a101"}):  # none, or another camera's id
        refused = _post(admin, "/setup/cameras/door-spare/delete", **fields)
        assert refused.status_code == 400 and "send confirm=door-spare" in html.unescape(refused.text)
    no_token = admin.post("/setup/cameras/door-spare/delete", data={"confirm": "door-spare"},
                          headers={"X-CSRF-Token": ""})
    assert no_token.status_code == 403
    assert "door-spare" in _cameras(served)
    missing = _post(admin, "/setup/cameras/door-none/delete", confirm="door-none")
    assert missing.status_code == 404 and "no camera 'door-none'" in html.unescape(missing.text)
    assert _post(admin, "/setup/doors/A101-none/delete", confirm="A101-none").status_code == 404


def test_a_camera_a_door_links_is_refused_naming_the_door(served):
    admin = kit.login(served, "admin")
    for camera_id, role in (("door-a101", "door"), ("room-a101", "room")):
        refused = _post(admin, f"/setup/cameras/{camera_id}/delete", confirm=camera_id)
        assert refused.status_code == 409, refused.text[:300]
        assert f"door A101-main (as its {role} camera)" in html.unescape(refused.text)
    assert {"door-a101", "room-a101"} <= _cameras(served)


def _recognitions(served, camera_id: str, count: int) -> None:
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    kit.db_call(served, lambda conn: conn.executemany(
        """INSERT INTO presence_event (event_id, kind, room_id, camera_id, track_id, person_id, frame_time,
                                       first_seen, last_seen, topic, kafka_partition, kafka_offset)
           VALUES (gen_random_uuid(), 'recognition', 'A101', $1, $2, 'obama', $3, $3, $3, 'test', 0, $4)""",
        [(camera_id, f"t{n}", at + dt.timedelta(seconds=n), 1000 + n) for n in range(count)]))


def test_admin_deletes_a_camera_after_confirming_and_its_past_events_stay(admin_page, served):
    _recognitions(served, "door-spare", 3)
    page = admin_page
    page.goto(served.url + "/setup/cameras")
    delete = page.locator("tr[data-camera=door-spare] form.delete button")
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    delete.click()
    page.wait_for_timeout(500)
    assert dialogs and "Delete camera door-spare?" in dialogs[0] and "door-spare" in _cameras(served)  # dismissed
    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    page.wait_for_selector(".flash")
    assert "camera door-spare deleted: its past events stay in the records" in page.locator(".flash").inner_text()
    assert "door-spare" not in _cameras(served)
    assert page.locator("tr[data-camera=door-spare]").count() == 0
    assert kit.db(served, "SELECT count(*) FROM presence_event WHERE camera_id = 'door-spare'")[0][0] == 3


def test_admin_deletes_a_door_then_the_camera_it_linked(admin_page, served):
    admin = kit.login(served, "admin")
    _add_camera(admin, "door-side")
    kit.db(served, """INSERT INTO door (id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s,
                                        transit_max_s)
                      VALUES ('A101-side', 'A101', 'door-side', 'room-a101', '[[0,0],[9,0],[9,9]]', 1, 9)""")
    refused = _post(admin, "/setup/cameras/door-side/delete", confirm="door-side")
    assert refused.status_code == 409 and "door A101-side (as its door camera)" in html.unescape(refused.text)
    page = admin_page
    page.goto(served.url + "/setup/doors")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-door=A101-side] form.delete button").click()
    page.wait_for_selector(".flash")
    assert "door A101-side deleted" in page.locator(".flash").inner_text()
    assert kit.db(served, "SELECT id FROM door ORDER BY id") and not kit.db(served, "SELECT id FROM door WHERE id = 'A101-side'")
    assert page.locator("tr[data-door=A101-main]").count() == 1  # the other door stays
    assert _post(admin, "/setup/cameras/door-side/delete", confirm="door-side").status_code == 200
    assert "door-side" not in _cameras(served)


def _listed(admin, camera_id: str) -> tuple[bool, bool]:
    """Whether the health API and the live camera API list the camera."""
    health = {c["id"] for c in admin.get("/api/health").json()["cameras"]}
    live = {c["id"] for c in admin.get("/api/cameras").json()["cameras"]}
    return camera_id in health, camera_id in live


def test_health_live_and_video_list_a_camera_added_in_the_dashboard(admin_page, served):
    admin = kit.login(served, "admin")
    assert _listed(admin, "room-extra") == (False, False)
    _add_camera(admin, "room-extra", role="room")
    # the dashboard reads the campus again within a few seconds (dashboard/campus_state.py), no restart
    _until(lambda: _listed(admin, "room-extra") == (True, True), "the new camera on the health and live APIs")
    assert "room-extra" in served.services.video.feeds
    video = admin.get("/api/video/room-extra/snapshot.jpg")  # its feed: nobody serves it, so its placeholder
    assert video.status_code == 200 and video.headers["content-type"] == "image/jpeg", video.text[:200]
    page = admin_page
    page.goto(served.url + "/health")
    assert "room-extra" in page.locator("#cameras").inner_text()
    page.goto(served.url + "/live")
    assert page.locator("figure.camera[data-camera=room-extra]").count() == 1
    kit.shot(page, "live-campus-camera")
    # disabled: on the health page still (as disabled), off the live grid, its video closed
    assert _post(admin, "/setup/cameras/room-extra/enabled", enabled="").status_code == 200
    _until(lambda: _listed(admin, "room-extra") == (True, False), "the disabled camera off the live API")
    assert "room-extra" not in served.services.video.feeds
    assert [c["enabled"] for c in admin.get("/api/health").json()["cameras"] if c["id"] == "room-extra"] == [False]
    assert _post(admin, "/setup/cameras/room-extra/delete", confirm="room-extra").status_code == 200
    _until(lambda: _listed(admin, "room-extra") == (False, False), "the deleted camera off the health API")
    assert admin.get("/api/video/room-extra/snapshot.jpg").status_code == 404


def test_a_camera_url_that_reads_local_files_is_refused_unless_allowed(served):
    admin = kit.login(served, "admin")
    refused = _post(admin, "/setup/cameras", id="door-file", role="door", room="A101", url="file:///etc/hostname")
    assert refused.status_code == 400 and "read this machine's files" in html.unescape(refused.text)
    assert "door-file" not in _cameras(served)
    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    video = f"file://{Path(rendered.room_video).resolve()}"
    # a row the config file's import may write (its cameras are not held to the dashboard's setting)
    kit.db(served, "INSERT INTO camera (id, role, room_id, url, analysis_fps) VALUES ('room-file', 'room', 'A101', $1, 5)",
           video)
    token = {"X-CSRF-Token": admin.headers["X-CSRF-Token"]}
    assert admin.post("/setup/cameras/room-file/test", headers=token).status_code == 400
    snapshot = admin.get("/setup/cameras/room-file/snapshot.jpg")
    assert snapshot.status_code == 400 and "allow_file_cameras" in html.unescape(snapshot.text)
    services = served.services
    original = services.config
    services.config = original.model_copy(update={"dashboard": original.dashboard.model_copy(
        update={"allow_file_cameras": True})})
    try:
        allowed = admin.get("/setup/cameras/room-file/snapshot.jpg")
        assert allowed.status_code == 200 and allowed.headers["X-Picture-Size"] == "1280x720"
        assert admin.post("/setup/cameras/room-file/test", headers=token).json()["ok"] is True
    finally:
        services.config = original
    assert _post(admin, "/setup/cameras/room-file/delete", confirm="room-file").status_code == 200


# ------------------------------------------------------------------------------------ a processor outside a group


@contextlib.contextmanager
def plain_processor_following(served):
    """A processor as `rollcall run` makes it (no group, following the database), with camera readers and
    a room stage but no models: its catalogue watcher (every 0.2 s) on the served database, in a thread
    of its own with its own event loop, applying each read as the processor does."""
    config = served.config.model_copy(update={"group": served.config.group.model_copy(update={"cameras_poll_s": 0.2})})
    processor = Processor(config, database_url=served.database_url, kafka_bootstrap_servers="unused",
                          follow_database=True)
    processor.ingest = IngestManager()
    processor.room = RoomStage(config, publish=lambda *a, **k: True, topic="presence", recognitions=asyncio.Queue())
    watcher = CatalogueWatcher(served.database_url, 0, 0.2, processor._follow_campus)
    loop = asyncio.new_event_loop()
    task = loop.create_task(watcher.run())
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    thread.start()

    def on_loop(work):
        async def run():
            return work()
        return asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    try:
        _until(lambda: watcher.current is not None, "the first catalogue read")
        processor.on_loop = on_loop
        yield processor
    finally:
        with contextlib.suppress(concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(processor.ingest.stop(timeout=5), loop).result(10)
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


def test_a_processor_outside_a_group_follows_the_camera_table(served):
    admin = kit.login(served, "admin")
    enabled = {r[0] for r in kit.db(served, "SELECT id FROM camera WHERE enabled")}
    with plain_processor_following(served) as processor:
        def running() -> set[str]:
            return processor.on_loop(lambda: set(processor.ingest.sources()))

        _until(lambda: running() == enabled, "the table's enabled cameras running")
        assert {c.id for c in processor.config.cameras} == _cameras(served)
        tracker = processor.on_loop(lambda: processor.room._tracker("room-a101"))
        _add_camera(admin, "door-follow")
        _until(lambda: "door-follow" in running(), "the added camera started")
        assert {c.id for c in processor.door_cameras()} >= {"door-a101", "door-follow"}
        assert _post(admin, "/setup/cameras/door-follow/enabled", enabled="").status_code == 200
        _until(lambda: "door-follow" not in running(), "the disabled camera stopped")
        assert _post(admin, "/setup/cameras/door-follow/enabled", enabled="yes").status_code == 200
        _until(lambda: "door-follow" in running(), "the enabled camera started again")
        assert _post(admin, "/setup/cameras/door-follow/delete", confirm="door-follow").status_code == 200
        _until(lambda: "door-follow" not in running(), "the deleted camera's stream dropped")
        assert "door-follow" not in {c.id for c in processor.config.cameras}
        zone = [[600.0, 400.0], [1200.0, 400.0], [1200.0, 700.0], [600.0, 700.0]]
        saved = admin.post("/setup/doors/A101-main/zone", json={"zone": zone},
                           headers={"X-CSRF-Token": admin.headers["X-CSRF-Token"]})
        assert saved.status_code == 200, saved.text[:300]
        feet_low_right = np.array([[900.0, 500.0, 1000.0, 650.0]])
        _until(lambda: processor.on_loop(lambda: tracker.zone_of(feet_low_right)) == ["A101-main"],
               "the redrawn zone in the running room stage")
        assert processor.room.trackers["room-a101"] is tracker  # the same tracker: no restart
