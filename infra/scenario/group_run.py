"""`rollcall scenario run --processors N [--kill-one-at S]`: the scenario on N processor processes in one
processor group (`rollcall run --group`), one of them SIGKILLed S seconds into the video.

    1. the run's cameras go into the run's database disabled; N members start and join the group;
    2. once the group has settled (every slot assigned, N members), the cameras are enabled in the
       database: the members pick them up without a restart and the videos start;
    3. a keeper client stays on each RTSP mount for the whole run, so a killed member's disconnection
       never rewinds the shared media (a real camera does not rewind either);
    4. at S seconds of video the member running the room camera (the one with the most to lose: its live
       tracks; or the door camera's, with kill_role "door") is SIGKILLed; the group moves its cameras and
       the new owner resumes the room's tracks;
    5. after the video the others get SIGTERM; scores come from the topics (events and statuses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import av

from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.failover import camera_gaps, double_analysis, periods_of

log = logging.getLogger("rollcall.scenario")


class StreamKeeper:
    """A client that reads an RTSP mount's packets (no decoding) until stopped: keeps shared media playing."""

    def __init__(self, url: str):
        self.url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keeper {url}", daemon=True)
        self.packets = 0

    def start(self) -> "StreamKeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with av.open(self.url, options={"rtsp_transport": "tcp", "analyzeduration": "500000"},
                             timeout=(10.0, 5.0)) as container:
                    for _ in container.demux(video=0):
                        self.packets += 1
                        if self._stop.is_set():
                            return
            except (av.FFmpegError, OSError) as exc:
                log.warning("stream keeper on %s: %s; reconnecting", self.url, exc)
                self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)


@dataclass
class Members:
    """The N `rollcall run --group` processes of one run."""

    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, count: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            with (self.log_dir / f"processor-{i}.log").open("wb") as out:
                self.processes.append(subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                       cwd=PROJECT_ROOT, start_new_session=True))

    def check_alive(self, killed: set[int]) -> None:
        for i, process in enumerate(self.processes):
            if i not in killed and process.poll() is not None:
                tail = (self.log_dir / f"processor-{i}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RollcallError(f"processor {i} of the group exited with status {process.returncode}: "
                                    + " | ".join(tail))

    def stop(self, timeout_s: float = 30.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def member_argv(config_path: Path, group: str) -> list[str]:
    return [sys.executable, "-m", "infra.cli.main", "--config", str(config_path), "run", "--group", group,
            "--metrics-port", "0", "-v"]


def group_config(config: Config) -> Config:
    """The run's config for its members: statuses every second (finer failover figures), camera table
    read twice a second (the cameras start as soon as they are enabled)."""
    return config.model_copy(update={"group": config.group.model_copy(update={
        "status_every_s": 1.0, "cameras_poll_s": 0.5})})


def write_config(config: Config, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    return path


async def set_cameras_enabled(database_url: str, cameras: list[str], enabled: bool) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute("UPDATE camera SET enabled = $2, updated_at = now() WHERE id = ANY($1::text[])",
                           cameras, enabled)
        await conn.execute("UPDATE camera SET enabled = false WHERE NOT (id = ANY($1::text[]))", cameras)
    finally:
        await conn.close()


def settled(statuses: list[dict], members: int, slot_count: int) -> bool:
    """Every slot assigned once, over ``members`` members, in their latest statuses."""
    latest: dict[str, dict] = {}
    for status in statuses:
        latest[status["processor_id"]] = status
    slots = [s for status in latest.values() for s in status["slots"]]
    live = [s for s in latest.values() if s["slots"]]
    return len(live) == members and len(slots) == slot_count and len(set(slots)) == slot_count


def owner_of(statuses: list[dict], camera_id: str) -> str | None:
    """The member whose latest status runs the camera."""
    latest: dict[str, dict] = {}
    for status in statuses:
        latest[status["processor_id"]] = status
    for processor, status in latest.items():
        if any(c["camera_id"] == camera_id and c["running"] for c in status["cameras"]):
            return processor
    return None


def stream_epoch(statuses: list[dict], camera_id: str) -> float | None:
    """The camera stream's time 0 on the wall clock, as its first owner saw it."""
    for status in statuses:
        for camera in status["cameras"]:
            if camera["camera_id"] == camera_id and camera.get("stream_epoch") is not None:
                return float(camera["stream_epoch"])
    return None


def failover_report(statuses: list[dict], cameras: list[str], *, processors: int, killed: dict | None,
                    ended_at: float, settle_s: float) -> dict:
    """``failover`` of the run's report: the longest gap of any camera, per camera, and double analysis
    after the group settled again (``settle_s`` after the kill)."""
    periods = periods_of(statuses)
    per_camera = {camera: camera_gaps(periods, camera, until=ended_at) for camera in cameras}
    after = (killed["at"] + settle_s) if killed else min((p.first for p in periods), default=ended_at) + settle_s
    for camera in cameras:
        per_camera[camera]["double_analysed_s"] = double_analysis(periods, camera, after)
    gaps = [c["max_gap_s"] for c in per_camera.values() if c["max_gap_s"] is not None]
    return {"processors": processors, "killed": killed, "max_gap_s": max(gaps) if gaps else None,
            "double_analysed_s": round(sum(c["double_analysed_s"] for c in per_camera.values()), 2),
            "settle_s": settle_s, "per_camera": per_camera}


def member_env(database_url: str, bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLCALL_CAMERA_")}
    env.update({"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"})
    return env


async def wait_for(predicate, reader, statuses: list[dict], timeout_s: float, what: str, check=None) -> None:
    """Read statuses until ``predicate(statuses)``; a RollcallError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate(statuses):
        if time.monotonic() > deadline:
            raise RollcallError(f"processor group: {what} not reached within {timeout_s:.0f} s")
        if check is not None:
            check()
        statuses += await reader.read_some(0.5)


@dataclass
class GroupOutcome:
    events: list[dict]  # recognitions
    presence: list[dict]
    statuses: list[dict]
    room_origin: float | None
    failover: dict
    frames: dict[str, int]  # camera -> frames analysed, all members together


async def play_group(spec, config: Config, cameras: dict[str, str], database_url: str, bootstrap: str, say, *,
                     processors: int, kill_at: float | None, log_dir: Path, readers, kill_role: str = "room"
                     ) -> GroupOutcome:
    """The scenario on ``processors`` group members (see the module). ``cameras``: camera id -> its run url
    (door first, room second); ``readers``: started TopicReaders of recognitions, presence and statuses."""
    recognitions, presence, status_reader = readers
    config = group_config(config)
    group = f"scenario-{log_dir.name}"
    door_camera, room_camera = list(cameras)
    await set_cameras_enabled(database_url, [], False)  # nothing runs until the group has settled
    members = Members(member_argv(write_config(config, log_dir / "config.json"), group),
                      member_env(database_url, bootstrap), log_dir)
    statuses: list[dict] = []
    keepers: list[StreamKeeper] = []
    killed_index: set[int] = set()
    killed = None
    try:
        members.start(processors)
        say(f"{processors} processors joining group {group} (logs in {log_dir})")
        slots = config.kafka.topics.camera_slots.partitions
        await wait_for(lambda s: settled(s, processors, slots), status_reader, statuses, 120, "a settled group",
                       check=lambda: members.check_alive(killed_index))
        await set_cameras_enabled(database_url, list(cameras), True)
        keepers = [StreamKeeper(url).start() for url in cameras.values()]
        say("group settled; cameras enabled in the database")
        await wait_for(lambda s: stream_epoch(s, room_camera) is not None and stream_epoch(s, door_camera) is not None,
                       status_reader, statuses, 60, "the first analysed frames", check=lambda: members.check_alive(killed_index))
        origin = stream_epoch(statuses, room_camera)
        end_at = origin + spec.duration_s + 2.0
        while time.time() < end_at:
            if kill_at is not None and killed is None and time.time() >= origin + kill_at:
                victim = room_camera if kill_role == "room" else door_camera
                killed = _kill_owner(members, statuses, victim, killed_index, origin, say)
            members.check_alive(killed_index)
            statuses += await status_reader.read_some(0.5)
        ended_at = time.time()
    finally:
        members.stop()
        for keeper in keepers:
            keeper.stop()
    statuses += await status_reader.read_all()
    (log_dir / "statuses.json").write_text(json.dumps(statuses), encoding="utf-8")  # who ran what, when
    failover = failover_report(statuses, list(cameras), processors=processors, killed=killed, ended_at=ended_at,
                               settle_s=config.group.session_timeout_s + 10.0)
    periods = periods_of(statuses)
    return GroupOutcome(events=await recognitions.read_all(), presence=await presence.read_all(), statuses=statuses,
                        room_origin=origin, failover=failover,
                        frames={c: sum(p.frames for p in periods if p.camera_id == c) for c in cameras})


def _kill_owner(members: Members, statuses: list[dict], camera: str, killed_index: set[int], origin: float,
                say) -> dict:
    """SIGKILL the member running ``camera`` now (its process found by the pid in its id)."""
    owner = owner_of(statuses, camera)
    if owner is None:
        raise RollcallError(f"processor group: nobody runs {camera} at the kill time")
    for i, process in enumerate(members.processes):
        if f"-{process.pid}-" in owner:
            process.kill()
            killed_index.add(i)
            cameras = sorted(c["camera_id"] for s in statuses if s["processor_id"] == owner
                             for c in s["cameras"] if c["running"])
            say(f"SIGKILLed processor {owner} at {time.time() - origin:.1f} s of video (it ran {', '.join(cameras)})")
            return {"processor_id": owner, "at": time.time(), "at_video_s": round(time.time() - origin, 2),
                    "cameras": sorted(set(cameras))}
    raise RollcallError(f"processor group: the owner {owner} of {camera} is not one of this run's processes")
