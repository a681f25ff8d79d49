"""The embedded stack with real processes (no mocks): PostgreSQL, Tansu, the GStreamer RTSP server.

One private stack for the module (ROLLCALL_HOME in a temp folder), brought down at the end; the
taken-port test uses a stack folder of its own. The test video is an H.264 MPEG-TS made here with
PyAV's libx264 (normal preset, GOP 1 s) whose frames carry their own index as 8 black/white blocks, so
a decoded frame can be checked against the exact picture that was encoded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from infra.devstack import broker

from infra.devstack import stack
from infra.foundation.errors import RollcallError
from infra.devstack.ports import wait_until
from tests.videos import make_numbered_video, numbered_picture, picture_number

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

W, H, FPS, N_FRAMES = 320, 240, 25, 50  # a 2 s loop
PYAV_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "500000"}
TOPIC = "stack-test"


# ------------------------------------------------------------------------------------------ the video
def frame_picture(index: int) -> np.ndarray:
    return numbered_picture(index, W, H)


def make_video(path: Path) -> Path:
    return make_numbered_video(path, W, H, N_FRAMES, FPS, preset="medium")


# ------------------------------------------------------------------------------------------- fixtures
def _private_folder(prefix: str) -> Path:
    # mkdtemp under /tmp, opened to o+x: PostgreSQL runs as the postgres user when tests run as root
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def tansu_seed() -> Path:
    """The broker binary under the ambient home (fetched once, cached), copied into private homes."""
    return broker.ensure_tansu()


@pytest.fixture(scope="module")
def private_home(tansu_seed):
    folder = _private_folder("rollcall-stack-test-")
    (folder / "bin").mkdir()
    shutil.copy2(tansu_seed, folder / "bin" / "tansu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROLLCALL_HOME", str(folder))
        mp.delenv("ROLLCALL_STACK_DIR", raising=False)
        yield folder
        try:
            stack.down()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def video(private_home) -> Path:
    return make_video(private_home / "loop.ts")


@pytest.fixture(scope="module")
def own_stack(private_home, video):
    started = time.monotonic()
    state = stack.up(topics=[(TOPIC, 3)], rtsp_mounts={"/cam1": video}, fast_fsync_off=True)
    print(f"\nstack up in {time.monotonic() - started:.2f} s; ready per component: {state.timings}")
    return state


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] in "ZX"
    except OSError:
        return True


# ------------------------------------------------------------------------------------------- stack
def test_up_reports_running_and_second_up_is_idempotent(own_stack):
    report = stack.status()
    assert {c: report[c]["state"] for c in stack.COMPONENTS} == dict.fromkeys(stack.COMPONENTS, "running")
    for comp in stack.COMPONENTS:
        assert report[comp]["pid"] == own_stack.pids[comp]
        assert Path(report[comp]["log"]).is_file()
    assert report["postgres"]["url"] == own_stack.database_url
    assert own_stack.database_url == f"postgresql://rollcall@127.0.0.1:{own_stack.pg_port}/rollcall"
    assert own_stack.kafka_bootstrap_servers == f"127.0.0.1:{own_stack.kafka_port}"
    assert own_stack.rtsp_url("/cam1") == f"rtsp://127.0.0.1:{own_stack.rtsp_port}/cam1"
    recorded = json.loads(stack.state_path().read_text())["components"]
    assert set(recorded) == set(stack.COMPONENTS)
    assert all({"pid", "port", "log", "started_at"} <= set(r) for r in recorded.values())

    started = time.monotonic()
    again = stack.up(topics=[(TOPIC, 3)], fast_fsync_off=True)
    assert again.pids == own_stack.pids and again.timings == {}
    assert (again.pg_port, again.kafka_port, again.rtsp_port) == (own_stack.pg_port, own_stack.kafka_port,
                                                                 own_stack.rtsp_port)
    assert time.monotonic() - started < 3
    assert stack.current_state().is_running("broker")


async def test_database_url_accepts_the_rollcall_role(own_stack):
    import asyncpg

    conn = await asyncpg.connect(own_stack.database_url)
    try:
        assert await conn.fetchval("SELECT current_user") == "rollcall"
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('survives down/up')")
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------- kafka
async def test_kafka_consumer_group_splits_partitions_and_resumes_from_commits(own_stack):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    bootstrap, group = own_stack.kafka_bootstrap_servers, "stack-test-group"
    assert broker.create_topics(bootstrap, [(TOPIC, 3)]) == {TOPIC: 3}  # existing: fine

    def consumer():
        return AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", heartbeat_interval_ms=300, rebalance_timeout_ms=1000,
                                session_timeout_ms=2000, metadata_max_age_ms=1000)

    async def produce(values: list[str]) -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            partition_of = {}
            for value in values:
                meta = await (await producer.send(TOPIC, key=value.split(":")[0].encode(), value=value.encode()))
                partition_of[value] = meta.partition
            return partition_of
        finally:
            await producer.stop()

    async def drain(consumers, want: int, timeout: float = 15) -> list[list]:
        got = [[] for _ in consumers]
        deadline = time.monotonic() + timeout
        while sum(map(len, got)) < want and time.monotonic() < deadline:
            for i, c in enumerate(consumers):
                for records in (await c.getmany(timeout_ms=100)).values():
                    got[i].extend(records)
        return got

    first, second = consumer(), consumer()
    await asyncio.gather(first.start(), second.start())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await drain([first, second], want=1, timeout=0.2)  # keeps both in the group's rebalance
            a, b = first.assignment(), second.assignment()
            if a and b and not (a & b) and len(a | b) == 3:
                break
        else:
            pytest.fail(f"the group never split the 3 partitions: {first.assignment()} / {second.assignment()}")

        old = [f"k{i % 12}:{i}" for i in range(60)]
        partition_of = await produce(old)
        assert len(set(partition_of.values())) == 3
        got = await drain([first, second], want=len(old))
        for c, records in zip((first, second), got):
            assert records, "each consumer of the group gets messages"
            assert {TopicPartition(r.topic, r.partition) for r in records} <= c.assignment()
            for r in records:
                assert partition_of[r.value.decode()] == r.partition and r.key.decode() == r.value.decode().split(":")[0]
        assert sorted(r.value.decode() for records in got for r in records) == sorted(old)
        await asyncio.gather(first.commit(), second.commit())
    finally:
        await asyncio.gather(first.stop(), second.stop())

    new = [f"k{i % 12}:new{i}" for i in range(15)]
    await produce(new)
    restarted = consumer()
    await restarted.start()
    try:
        (got,) = await drain([restarted], want=len(new), timeout=25)
        (extra,) = await drain([restarted], want=1, timeout=0.5)
    finally:
        await restarted.stop()
    assert sorted(r.value.decode() for r in got + extra) == sorted(new)


# -------------------------------------------------------------------------------------------- RTSP
def decode_for(url: str, seconds: float, result: dict, delay: float = 0.0) -> None:
    """Read ``url`` for ``seconds``: frames, their encoded index, the worst pixel error, errors.

    Like any client of a live camera, it starts at the first keyframe that decodes clean: a client that
    joins shared media while a keyframe is on the wire gets only its tail (a corrupt picture, and the
    P-frames built on it), so it waits for the next one. ``skipped`` counts the frames dropped that way;
    every frame after the start counts, and FFmpeg's errors after the start are collected.
    """
    import av.logging

    time.sleep(delay)
    result.update(frames=0, corrupt=0, skipped=0, errors=[], indexes=[], pts=[], max_diff=0.0, ffmpeg=[])
    with av.logging.Capture(local=True) as logs:
        _decode(url, seconds, result, logs)
    result["ffmpeg"] = [f"{name}: {message.strip()}" for level, name, message in logs[result.get("log_mark", 0):]
                        if level <= av.logging.ERROR]


def _decode(url: str, seconds: float, result: dict, logs: list) -> None:
    import av

    try:
        started = time.monotonic()
        container = av.open(url, options=PYAV_OPTIONS, timeout=10)
        result["open_s"] = time.monotonic() - started
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # 5 decoders on 2 cores; FFmpeg's messages stay in this thread
        phase = "seek"  # seek: skip packets up to a keyframe; probe: is its picture clean?; run: count all
        try:
            for packet in container.demux(stream):
                if time.monotonic() - started > seconds:
                    break
                if len(result.setdefault("packets", [])) < 40:  # for failure messages
                    result["packets"].append((round(time.monotonic() - started, 2), packet.pts, packet.is_keyframe,
                                              packet.size, phase))
                if phase == "seek":
                    if not packet.is_keyframe:
                        continue
                    phase = "probe"
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    if phase == "run":
                        result["errors"].append(str(exc))
                    continue
                for frame in frames:
                    if phase == "probe":
                        if frame.key_frame and not frame.is_corrupt:
                            phase = "run"
                            result["log_mark"] = len(logs)
                        else:
                            phase = "seek"
                            stream.codec_context.flush_buffers()  # forget the broken pictures
                    if phase != "run":
                        result["skipped"] += 1
                        continue
                    img = frame.to_ndarray(format="rgb24")
                    index = picture_number(img)
                    diff = np.abs(img[44:].astype(int) - frame_picture(index)[44:].astype(int)).mean()
                    result["frames"] += 1
                    result["corrupt"] += int(frame.is_corrupt)
                    result["max_diff"] = max(result["max_diff"], float(diff))
                    result["indexes"].append(index)
                    if frame.pts is not None:
                        result["pts"].append(frame.pts)
        finally:
            container.close()
    except Exception as exc:  # reported by the test
        result["errors"].append(f"{type(exc).__name__}: {exc}")


def check_stream(result: dict, min_frames: int) -> None:
    assert not result["errors"], result["errors"]
    assert not result["ffmpeg"], (result["ffmpeg"], result["indexes"])
    assert result["skipped"] <= 2 * FPS, "a clean keyframe comes at least every second"
    assert result["frames"] >= min_frames, result
    assert result["corrupt"] == 0
    assert result["max_diff"] < 8, f"decoded pictures differ from the encoded ones: {result['max_diff']:.1f}"
    indexes = result["indexes"]
    steps = [(b - a) % N_FRAMES for a, b in zip(indexes, indexes[1:])]
    assert all(step == 1 for step in steps), f"frames skipped or repeated: {indexes}"
    pts = result["pts"]
    assert all(b > a for a, b in zip(pts, pts[1:])), "timestamps must keep increasing across the loop"


@pytest.fixture
def ffmpeg_errors_logged():
    """FFmpeg's messages reach Python only while PyAV's log level is set."""
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    yield
    av.logging.set_level(level)


def test_rtsp_four_concurrent_clients_and_a_late_one_decode_every_frame(own_stack, ffmpeg_errors_logged):
    url = own_stack.rtsp_url("/cam1")
    results = [{} for _ in range(5)]
    threads = [threading.Thread(target=decode_for, args=(url, 3.5, results[i])) for i in range(4)]
    # a fifth client joins the shared media while the others play, mid-GOP and across the loop point
    threads.append(threading.Thread(target=decode_for, args=(url, 2.5, results[4], 1.3)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for result in results[:4]:
        check_stream(result, min_frames=40)
        assert any(b < a for a, b in zip(result["indexes"], result["indexes"][1:])), "the 2 s file looped"
    check_stream(results[4], min_frames=30)
    print(f"\nRTSP open times: {[round(r['open_s'], 2) for r in results]} s; "
          f"frames: {[r['frames'] for r in results]}; skipped before a clean keyframe: "
          f"{[r['skipped'] for r in results]}")

    # after every client left, the shared media is rebuilt for the next one
    later: dict = {}
    decode_for(url, 1.2, later)
    check_stream(later, min_frames=15)


def test_rtsp_mounts_change_at_run_time_without_restart(own_stack, video, ffmpeg_errors_logged):
    import av

    pid = own_stack.pids["rtsp"]
    assert stack.set_rtsp_mounts({"/cam1": video, "/cam2": video}) == {"/cam1": str(video), "/cam2": str(video)}
    result: dict = {}
    decode_for(own_stack.rtsp_url("/cam2"), 1.2, result)
    check_stream(result, min_frames=15)

    stack.set_rtsp_mounts({"/cam2": video})
    with pytest.raises(av.error.FFmpegError):
        av.open(own_stack.rtsp_url("/cam1"), options=PYAV_OPTIONS, timeout=5).close()
    assert stack.status()["rtsp"]["pid"] == pid and stack.status()["rtsp"]["mounts"] == {"/cam2": str(video)}
    with pytest.raises(RollcallError, match="does not exist"):
        stack.set_rtsp_mounts({"/cam3": video.with_name("missing.ts")})
    stack.set_rtsp_mounts({"/cam1": video})


# ---------------------------------------------------------------------------------- crash and down
def test_crashed_component_is_reported_and_up_restarts_only_it(own_stack):
    before = dict(own_stack.pids)
    os.kill(before["kafka"], signal.SIGKILL)
    assert wait_until(lambda: _gone(before["kafka"]), 5)
    report = stack.status()
    assert report["kafka"]["state"] == "crashed" and "gone" in report["kafka"]["detail"]
    assert report["postgres"]["state"] == report["rtsp"]["state"] == "running"
    assert not stack.current_state().is_running("kafka")

    state = stack.up(topics=[(TOPIC, 3)], fast_fsync_off=True)
    assert state.pids["kafka"] != before["kafka"] and set(state.timings) == {"kafka"}
    assert state.pids["postgres"] == before["postgres"] and state.pids["rtsp"] == before["rtsp"]
    assert state.kafka_port == own_stack.kafka_port  # same port again: the broker's clients keep working
    assert all(v["state"] == "running" for v in stack.status().values())
    # the memory-only broker lost its topics with the crash: up made them again
    assert broker.create_topics(state.kafka_bootstrap_servers, [(TOPIC, 3)]) == {TOPIC: 3}


def test_down_stops_every_process_and_up_again_keeps_ports_and_data(own_stack):
    import asyncpg

    pids = stack.current_state().pids
    assert stack.down() == list(stack.COMPONENTS)
    assert all(_gone(pid) for pid in pids.values())
    assert {c: v["state"] for c, v in stack.status().items()} == dict.fromkeys(stack.COMPONENTS, "stopped")
    assert stack.down() == []

    state = stack.up(fast_fsync_off=True)
    assert (state.pg_port, state.kafka_port, state.rtsp_port) == (own_stack.pg_port, own_stack.kafka_port,
                                                                 own_stack.rtsp_port)

    async def kept() -> list:
        conn = await asyncpg.connect(state.database_url)
        try:
            return [r["v"] for r in await conn.fetch("SELECT v FROM kept")]
        finally:
            await conn.close()

    assert asyncio.run(kept()) == ["survives down/up"]


# ------------------------------------------------------------------------------------- clear errors
def test_explicit_port_taken_is_refused_before_anything_starts(tansu_seed, monkeypatch):
    folder = _private_folder("rollcall-stack-port-")
    monkeypatch.setenv("ROLLCALL_STACK_DIR", str(folder / "stack"))
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            with pytest.raises(RollcallError) as caught:
                stack.up(pg_port=port, fast_fsync_off=True)
            assert str(caught.value) == (
                f"port {port} for PostgreSQL is taken by another program: free it or set "
                "[stack] postgres_port = 0 to choose one"
            )
            with pytest.raises(RollcallError, match=f"port {port} for the Kafka broker .* kafka_port = 0"):
                stack.up(kafka_port=port, fast_fsync_off=True)
        report = stack.status()
        assert all(v["state"] == "stopped" and v["pid"] is None for v in report.values())
        assert not (folder / "stack" / "postgres" / "data").exists()
    finally:
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root PostgreSQL runs as the postgres user")
def test_folder_the_postgres_user_cannot_enter_gives_a_clear_error(monkeypatch):
    folder = _private_folder("rollcall-stack-closed-")
    closed = folder / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(folder / "elsewhere"))  # not a temp folder any more
    monkeypatch.setenv("ROLLCALL_STACK_DIR", str(closed / "stack"))
    try:
        with pytest.raises(RollcallError, match=rf"cannot enter {closed}: run 'chmod o\+x {closed}'"):
            stack.up(fast_fsync_off=True)
        assert all(v["state"] == "stopped" for v in stack.status().values())
    finally:
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)
