"""Processors as one Kafka group, for real: `rollcall run --group` processes on the session's broker,
PostgreSQL and RTSP server, watched through their status events (schemas/processor_status.v1.json).

One story, step by step (each step's assertion names what broke): two members spread four cameras by
cost; a third member joins and takes a share; a camera added to the database is picked up without a
restart; the member running a room camera is SIGKILLed and the others take its cameras; after each
settle no camera runs on two members. (The room's tracks continuing under the new owner: the failover
scenario in tests/test_scenario_run.py and tests/test_room_resume.py.)
"""

from __future__ import annotations

import datetime as dt
import time

import asyncpg
import pytest
from infra.devstack import stack as embedded
from infra.devstack.run_space import run_space
from infra.foundation import db
from infra.foundation.config import EXAMPLE_CONFIG, CameraConfig, DoorConfig, RoomConfig, load_config
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.group_run import Members, group_config, member_argv, member_env, write_config
from infra.scenario.mounts import render_cached
from infra.scenario.topic_reader import TopicReader

ZONE = [(0.0, 300.0), (400.0, 300.0), (400.0, 720.0), (0.0, 720.0)]


def campus(config, rtsp_url):
    """Two rooms, each with a door camera and a room camera (the default scenario's videos)."""
    cameras, doors = [], []
    for room in ("A101", "B202"):
        tag = room.lower()
        cameras += [CameraConfig(id=f"door-{tag}", url=rtsp_url("group-test/door"), role="door", room=room),
                    CameraConfig(id=f"room-{tag}", url=rtsp_url("group-test/room"), role="room", room=room)]
        doors.append(DoorConfig(id=f"{tag}-main", room=room, door_camera=f"door-{tag}", room_camera=f"room-{tag}",
                                entry_zone=ZONE))
    rooms = [RoomConfig(id="A101"), RoomConfig(id="B202")]
    return config.model_copy(update={"cameras": cameras, "doors": doors, "rooms": rooms, "courses": [],
                                     "timetable": []})


class Watch:
    """The members' latest statuses."""

    def __init__(self, reader: TopicReader):
        self.reader = reader
        self.latest: dict[str, dict] = {}
        self.all: list[dict] = []

    async def until(self, predicate, timeout_s: float, what: str, members: Members | None = None):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for status in await self.reader.read_some(0.5):
                self.all.append(status)
                self.latest[status["processor_id"]] = status
            if predicate(self):
                return
            if members is not None:
                members.check_alive(set())
        pytest.fail(f"{what} not reached within {timeout_s:.0f} s; latest statuses: {self.running()}")

    async def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for status in await self.reader.read_some(0.5):
                self.all.append(status)
                self.latest[status["processor_id"]] = status

    def running(self, alive: set[str] | None = None) -> dict[str, list[str]]:
        """camera -> the members whose latest status runs it."""
        by_camera: dict[str, list[str]] = {}
        for processor, status in self.latest.items():
            if alive is not None and processor not in alive:
                continue
            for camera in status["cameras"]:
                if camera["running"]:
                    by_camera.setdefault(camera["camera_id"], []).append(processor)
        return by_camera

    def analysing(self, camera_id: str, since: float) -> set[str]:
        """Members that reported analysed frames of the camera captured after ``since``."""
        return {s["processor_id"] for s in self.all for c in s["cameras"]
                if c["camera_id"] == camera_id and c["frames"] and c["last_frame_time"]
                and _t(c["last_frame_time"]) > since}


def _t(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def once_each(watch: Watch, cameras: set[str], alive: set[str] | None = None) -> bool:
    running = watch.running(alive)
    return set(running) == cameras and all(len(owners) == 1 for owners in running.values())


async def add_camera(database_url: str, camera_id: str, url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO camera (id, role, room_id, url, analysis_fps) VALUES ($1, 'door', 'A101', $2, 5)",
                           camera_id, url)
    finally:
        await conn.close()


@pytest.mark.timeout(600)
async def test_cameras_spread_move_and_follow_the_database(stack, tmp_path):
    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    mounts = embedded.read_rtsp_mounts()
    embedded.set_rtsp_mounts({**mounts, "/group-test/door": rendered.door_video, "/group-test/room": rendered.room_video})
    config = campus(load_config(EXAMPLE_CONFIG, environ={}), stack.rtsp_url)
    try:
        with run_space(config, stack.database_url, stack.kafka_bootstrap_servers, kind="grouptest") as space:
            await db.load_topology(space.database_url, space.config)
            await run_the_story(space, tmp_path)
    finally:
        embedded.set_rtsp_mounts(mounts)


async def run_the_story(space, tmp_path) -> None:
    config = group_config(space.config)
    members = Members(member_argv(write_config(config, tmp_path / "config.json"), "group-test"),
                      member_env(space.database_url, space.bootstrap), tmp_path)
    watch = Watch(await TopicReader.start(space.bootstrap, config.kafka.topics.processors.name))
    four = {"door-a101", "room-a101", "door-b202", "room-b202"}
    try:
        members.start(2)
        await watch.until(lambda w: len(w.latest) == 2 and once_each(w, four), 180, "two members running the four "
                          "cameras once each", members)
        # by cost (room 3, door 1): each member runs one room and one door
        for processor in watch.latest:
            mine = [c for c, owners in watch.running().items() if processor in owners]
            assert sorted(c.split("-")[0] for c in mine) == ["door", "room"], watch.running()

        members.start(1)  # a third member joins and takes a share
        await watch.until(lambda w: len(w.latest) == 3 and once_each(w, four)
                          and len({o[0] for o in w.running().values()}) == 3, 120,
                          "the new member running a share", members)

        await add_camera(space.database_url, "door-c303", space.config.camera("door-a101").url)
        await watch.until(lambda w: once_each(w, four | {"door-c303"}), 30, "the added camera running once", members)

        victim_camera = "room-a101"
        victim = watch.running()[victim_camera][0]
        process = next(p for p in members.processes if f"-{p.pid}-" in victim)
        process.kill()
        killed_at = time.time()
        alive = set(watch.latest) - {victim}
        await watch.until(lambda w: once_each(w, four | {"door-c303"}, alive) and
                          victim_camera in w.running(alive), 60, "the killed member's cameras taken over", None)
        moved_at = time.time()
        assert moved_at - killed_at < config.group.session_timeout_s + 15
        settled = moved_at + 3  # from here on each camera is analysed by one member only
        await watch.read_for(10)
        for camera in four | {"door-c303"}:
            assert len(watch.analysing(camera, settled) - {victim}) == 1, (camera, watch.running(alive))
    finally:
        members.stop()
        await watch.reader.close()
