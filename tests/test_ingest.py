"""Ingest with real RTSP streams from the session's embedded stack and real PyAV (no mocks).

The videos are H.264 in MPEG-TS made here with libx264 the way the scenario renderer makes them
(veryfast, a keyframe every second, 10 fps); every frame carries its index as 8 black/white blocks,
so a decoded picture says which encoded frame it is. Mounts are this module's own (``/ingest-<id>/…``),
added beside whatever other tests serve and removed at the end.

A corrupt file must not be served by the shared RTSP server: one DESCRIBE of a mount whose file is not
MPEG-TS wedges GStreamer's client handling for every new session for ~20 s (measured), so the garbage
mount lives on a private RTSP server process this module starts (and stops by its PID).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from infra.devstack import rtsp
from infra.devstack import stack as embedded
from infra.devstack.ports import choose_free_port, wait_until
from processor.ingest import CameraState, IngestManager, IngestOptions
from tests.videos import make_numbered_video, picture_number

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FPS, LOOP = 10, 30  # 10 fps, a 3 s loop, a keyframe every second
C, S, B, R = (CameraState.CONNECTING, CameraState.STREAMING, CameraState.BACKING_OFF, CameraState.STALLED)
# short timeouts so the failure paths run in seconds; backoff base as in production, capped lower
OPTIONS = IngestOptions(stall_timeout_s=1.5, open_timeout_s=1.5, keyframe_timeout_s=3.0, backoff_base_s=0.5,
                        backoff_cap_s=4.0, healthy_after_s=3.0)


# ------------------------------------------------------------------------------------------ videos
def make_video(path: Path, width: int, height: int, frames: int = LOOP) -> Path:
    return make_numbered_video(path, width, height, frames, FPS)


def damage(source: Path, target: Path, every: int = 3, seed: int = 3) -> Path:
    """The same TS with random bytes over the H.264 data of every ``every``-th non-key picture.

    TS and PES headers stay intact (so the server serves it as usual) and keyframes stay clean (so a
    client can resynchronise at each one).
    """
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    pes, key, damaged = -1, False, set()
    for offset in range(0, len(data) - 187, 188):
        if ((data[offset + 1] & 0x1F) << 8) | data[offset + 2] != 0x100:  # the video PID
            continue
        adaptation = (data[offset + 3] >> 4) & 2
        if data[offset + 1] & 0x40:  # a PES (one picture) starts here
            pes += 1
            key = bool(adaptation and data[offset + 4] and data[offset + 5] & 0x40)  # random access indicator
        elif not adaptation and not key and pes % every == every - 1 and pes not in damaged:
            damaged.add(pes)
            data[offset + 4:offset + 188] = rng.integers(0, 256, 184, dtype=np.uint8).tobytes()
    assert damaged, "nothing damaged"
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def media(stack, tmp_path_factory):
    """This module's videos and mounts on the session's RTSP server: {name: (mount, file)}."""
    folder = tmp_path_factory.mktemp("ingest")
    folder.chmod(0o755)  # the RTSP server reads the files
    hd = make_video(folder / "hd.ts", 1280, 720)
    small = make_video(folder / "small.ts", 320, 240)
    prefix = f"/ingest-{uuid.uuid4().hex[:6]}"
    files = {"hd": hd, "small": small, "relay": small, "damaged": damage(small, folder / "damaged.ts")}
    mounts = {name: (f"{prefix}/{name}", file) for name, file in files.items()}
    add_mounts({mount: file for mount, file in mounts.values()})
    yield SimpleNamespace(folder=folder, prefix=prefix, small=small, mounts=mounts,
                          url=lambda name: stack.rtsp_url(mounts[name][0]))
    remove_mounts([m for m in embedded.read_rtsp_mounts() if m.startswith(prefix + "/")])


def add_mounts(extra: dict[str, Path]) -> None:
    """Add mounts beside the ones other tests serve (never replace theirs)."""
    embedded.set_rtsp_mounts({**embedded.read_rtsp_mounts(), **{m: str(f) for m, f in extra.items()}})


def remove_mounts(mounts: list[str]) -> None:
    embedded.set_rtsp_mounts({m: f for m, f in embedded.read_rtsp_mounts().items() if m not in mounts})


def camera(camera_id: str, url: str, fps: float = 5.0, enabled: bool = True) -> SimpleNamespace:
    """What IngestManager.sync reads of a CameraConfig."""
    return SimpleNamespace(id=camera_id, url=url, analysis_fps=fps, enabled=enabled)


async def until(check, timeout: float, what: str) -> float:
    """Poll ``check`` on the loop; seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def states(source) -> list[CameraState]:
    return [t.new for t in source.transitions]


async def decoded_rate(source, seconds: float) -> float:
    before, started = source.decoded, time.monotonic()
    await asyncio.sleep(seconds)
    return (source.decoded - before) / (time.monotonic() - started)


class Drain:
    """A consumer on the loop: takes every frame of a buffer as it arrives, remembering when."""

    def __init__(self, buffer):
        self.buffer, self.frames, self.arrivals, self.taken_at = buffer, [], [], []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        while True:
            await self.buffer.ready.wait()
            while (frame := self.buffer.take()) is not None:
                self.frames.append(frame)
                self.arrivals.append(time.monotonic())
                self.taken_at.append(time.time())

    def max_gap(self, since: float = 0.0) -> float:
        times = [t for t in self.arrivals if t >= since]
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def metric(name: str, camera_id: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, {"camera": camera_id, **labels})


# -------------------------------------------------------------------------------------------- tests
async def test_sampled_at_half_rate_by_pts_and_slow_consumer_drops_oldest(media):
    manager = IngestManager(OPTIONS)
    manager.sync([camera("hd", media.url("hd"), fps=5)])
    source = manager.source("hd")
    buffer = manager.buffers()["hd"]
    try:
        await until(lambda: source.state is S, 10, "the HD camera streams")
        drain = Drain(buffer)
        cpu0, decoded0, t0 = os.times(), source.decoded, time.monotonic()
        await asyncio.sleep(4.0)
        cpu1, decoded1, t1 = os.times(), source.decoded, time.monotonic()
        await drain.stop()
        fast = list(drain.frames)

        # ~5 of 10 frames a second, by stream time: consecutive encoded frames two apart, pts 0.2 s apart
        assert 17 <= len(fast) <= 23, len(fast)
        pts = [f.pts_s for f in fast]
        assert all(b > a for a, b in zip(pts, pts[1:])), pts
        assert all(abs((b - a) - 0.2) < 0.02 for a, b in zip(pts, pts[1:])), pts
        steps = {(picture_number(b.image) - picture_number(a.image)) % LOOP for a, b in zip(fast, fast[1:])}
        assert steps == {2}, [picture_number(f.image) for f in fast]
        assert [f.seq for f in fast] == list(range(fast[0].seq, fast[0].seq + len(fast)))
        assert all(f.image.shape == (720, 1280, 3) and f.image.dtype == np.uint8 for f in fast)
        assert all(f.camera_id == "hd" and abs(f.captured_at - time.time()) < 10 for f in fast)
        # dated by the camera's clock: never after the frame reached us, and as far apart as their stream times
        assert all(f.captured_at <= taken for f, taken in zip(fast, drain.taken_at))
        settled = fast[5:]  # the least delay is learnt within the first second
        assert all(abs((b.captured_at - a.captured_at) - (b.pts_s - a.pts_s)) < 0.05 for a, b in zip(settled, settled[1:]))
        assert buffer.dropped == 0, "a consumer that keeps up loses nothing"

        # a slow consumer: looks once a second; the buffer holds the newest two and counts the rest
        taken, last_seq = len(fast), fast[-1].seq
        for _ in range(3):
            await asyncio.sleep(1.0)
            first, second = buffer.take(), buffer.take()
            assert first is not None and second is not None and second.seq == first.seq + 1
            assert first.seq >= last_seq + 3, "older frames were dropped, the newest kept"
            taken, last_seq = taken + 2, second.seq
        assert buffer.dropped >= 6, buffer.dropped
    finally:
        assert await manager.stop() == []
    stats = source.stats()
    assert stats["state"] == "STOPPED"
    assert stats["dropped"] == buffer.dropped
    assert stats["analysed"] == taken + buffer.dropped + len(buffer)
    assert stats["decoded"] == (stats["skipped"] + stats["out_of_order"] + stats["untimed"] + stats["not_sampled"]
                                + stats["analysed"])
    assert stats["skipped"] <= 2 * FPS and stats["reconnects"] == 0 and stats["last_error"] is None
    assert stats["resolution"] == (1280, 720) and stats["hwaccel"] == "software"
    cpu_ms = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) * 1000 / max(1, decoded1 - decoded0)
    print(f"\nHD 1280x720 @10 fps sampled at 5: open {stats['open_s']:.2f} s, first clean frame "
          f"{stats['first_frame_s']:.2f} s after connecting; {(decoded1 - decoded0) / (t1 - t0):.1f} frames/s decoded; "
          f"process CPU {cpu_ms:.1f} ms per decoded frame (decode + BGR of the sampled half)")


async def test_metrics_follow_the_counters(media):
    manager = IngestManager(OPTIONS)
    manager.sync([camera("metrics", media.url("small"), fps=2)])
    source = manager.source("metrics")
    try:
        await until(lambda: source.analysed >= 3, 10, "frames analysed")
        await manager.stop()
        assert metric("rollcall_camera_frames_decoded_total", "metrics") is None, "stop forgets the series"
    finally:
        await manager.stop()
    # counters while running
    manager = IngestManager(OPTIONS)
    manager.sync([camera("metrics", media.url("small"), fps=2)])
    source = manager.source("metrics")
    try:
        await until(lambda: source.analysed >= 4, 10, "frames analysed")
        buffer = manager.buffers()["metrics"]
        while buffer.take() is not None:  # a put may land between two reads: compare quiet values
            pass
        decoded = metric("rollcall_camera_frames_decoded_total", "metrics")
        assert decoded is not None and abs(decoded - source.decoded) <= 2
        assert abs(metric("rollcall_camera_frames_analysed_total", "metrics") - source.analysed) <= 1
        assert metric("rollcall_camera_frames_dropped_total", "metrics") == pytest.approx(buffer.dropped, abs=1)
        assert metric("rollcall_camera_reconnects_total", "metrics") == 0
        assert metric("rollcall_camera_state", "metrics", state="STREAMING") == 1
        assert all(metric("rollcall_camera_state", "metrics", state=s.value) == 0 for s in CameraState if s is not S)
    finally:
        await manager.stop()


async def test_unreachable_cameras_back_off_while_a_healthy_one_keeps_its_rate(media, caplog):
    caplog.set_level(logging.INFO, logger="rollcall.ingest")
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    closed_port = choose_free_port()
    manager = IngestManager(OPTIONS)
    manager.sync([camera("healthy", media.url("small"), fps=5)])
    healthy = manager.source("healthy")
    try:
        await until(lambda: healthy.state is S, 10, "the healthy camera streams")
        alone = await decoded_rate(healthy, 3.0)
        manager.sync([camera("healthy", media.url("small"), fps=5),
                      camera("silent", f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"),
                      camera("refused", f"rtsp://admin:secret@127.0.0.1:{closed_port}/cam")])
        assert manager.source("healthy") is healthy
        beside = await decoded_rate(healthy, 7.0)
        assert alone == pytest.approx(FPS, rel=0.15) and beside == pytest.approx(alone, rel=0.15), (alone, beside)
        assert states(healthy) == [C, S], healthy.transitions

        for name, min_attempts in (("silent", 3), ("refused", 5)):
            source = manager.source(name)
            seen = states(source)
            assert S not in seen and seen[:2] == [C, B], seen
            assert all(a is C and b is B for a, b in zip(seen[0::2], seen[1::2])), seen
            backoffs = [t for t in source.transitions if t.new is B]
            assert len(backoffs) >= min_attempts, (name, [t.reason for t in backoffs])
            ceilings = [t.ceiling_s for t in backoffs]
            assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0][:len(ceilings[:4])], ceilings  # doubling, then capped
            assert all(0 <= t.delay_s <= t.ceiling_s for t in backoffs)
            stats = source.stats()
            assert stats["decoded"] == 0 and stats["reconnects"] >= min_attempts - 1
            assert metric("rollcall_camera_reconnects_total", name) == stats["reconnects"] or \
                metric("rollcall_camera_reconnects_total", name) == stats["reconnects"] - 1  # mid-attempt
        assert "open timed out" in manager.source("silent").last_error
        refused = manager.source("refused")
        assert "Connection refused" in refused.last_error and "rtsp://***@127.0.0.1" in refused.last_error
        assert refused.stats()["url"] == f"rtsp://***@127.0.0.1:{closed_port}/cam"
        assert not any("secret" in r.getMessage() for r in caplog.records), "credentials never reach the logs"
        # one log line per state change, naming the camera and the reason
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("camera silent: ")]
        assert len(lines) >= len(manager.source("silent").transitions) - 1
        assert any("-> BACKING_OFF" in line and "open timed out" in line for line in lines)
    finally:
        assert await manager.stop() == []
        silent.close()
        for conn in held:
            conn.close()


async def test_stream_that_dies_comes_back_and_the_other_camera_never_stops(media):
    dying_file = media.folder / f"dying-{uuid.uuid4().hex[:4]}.ts"
    shutil.copy(media.small, dying_file)
    mount = f"{media.prefix}/dying"
    add_mounts({mount: dying_file})
    manager = IngestManager(OPTIONS)
    manager.sync([camera("dying", f"embedded:{mount}"), camera("other", media.url("small"))])
    dying, other = manager.source("dying"), manager.source("other")
    drain = Drain(other.buffer)
    try:
        await until(lambda: dying.state is S and other.state is S, 10, "both cameras stream")
        watch_from = time.monotonic()
        # the server stops serving it: mount removed, file gone (its media ends at the loop point)
        remove_mounts([mount])
        dying_file.unlink()
        left = await until(lambda: dying.state is not S, LOOP / FPS + 3, "the dead stream leaves STREAMING")
        await until(lambda: dying.failures >= 2, 10, "the dead camera keeps retrying")
        assert "end of stream" in dying.transitions[states(dying).index(B)].reason or \
            "stalled" in dying.transitions[states(dying).index(B)].reason
        assert "404" in dying.last_error, dying.last_error

        shutil.copy(media.small, dying_file)
        add_mounts({mount: dying_file})
        back = await until(lambda: dying.state is S, 10, "the camera streams again")
        assert back < OPTIONS.backoff_cap_s + 2.5
        await asyncio.sleep(1.0)
        assert states(other) == [C, S], other.transitions
        assert drain.max_gap(since=watch_from) < 1.0, "the other camera kept delivering every 0.2 s"
        print(f"\nstream gone: left STREAMING after {left:.1f} s; back: STREAMING again {back:.2f} s after the "
              f"mount returned (open {dying.open_s:.2f} s, first clean frame {dying.first_frame_s:.2f} s)")
    finally:
        await drain.stop()
        assert await manager.stop() == []
        remove_mounts([mount])


class Relay:
    """A TCP relay in front of the RTSP server that can freeze: connections stay open, nothing flows."""

    def __init__(self, port: int):
        self.upstream = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client = self.server.accept()[0]
                upstream = socket.create_connection(self.upstream)
            except OSError:
                return
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket):
        try:
            while True:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.flowing.set()
        self.server.close()
        for sock in self.sockets:
            sock.close()


async def test_a_stalled_stream_is_detected_and_reconnected(media, stack):
    relay = Relay(stack.rtsp_port)
    manager = IngestManager(OPTIONS)
    manager.sync([camera("relayed", f"rtsp://127.0.0.1:{relay.port}{media.mounts['relay'][0]}")])
    source = manager.source("relayed")
    try:
        await until(lambda: source.state is S, 10, "the relayed camera streams")
        relay.flowing.clear()  # the network goes quiet: the TCP connection stays up
        frozen = time.monotonic()
        await until(lambda: R in states(source), OPTIONS.stall_timeout_s + 2, "STALLED")
        stalled = next(t for t in source.transitions if t.new is R)
        assert OPTIONS.stall_timeout_s * 0.5 <= stalled.monotonic - frozen <= OPTIONS.stall_timeout_s + 1.0
        assert "stalled" in stalled.reason
        after = states(source)[states(source).index(R):]
        await until(lambda: len(states(source)) > len(after) + 2, 10, "reconnect attempts while frozen")
        relay.flowing.set()
        back = await until(lambda: source.state is S and states(source).count(S) == 2, 12, "streaming again")
        assert states(source)[states(source).index(R) + 1] is B
        print(f"\nstall detected {stalled.monotonic - frozen:.2f} s after the stream froze; streaming again "
              f"{back:.2f} s after it resumed")
    finally:
        assert await manager.stop() == []
        relay.close()


@pytest.fixture
def private_rtsp(media, tmp_path):
    """A second RTSP server process (same script as the stack's) for a mount that must not be shared."""
    garbage = media.folder / "garbage.ts"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    mounts = tmp_path / "mounts.json"
    mounts.write_text(f'{{"/garbage": "{garbage}"}}')
    port = choose_free_port()
    process = subprocess.Popen([rtsp.SYSTEM_PYTHON, "-I", str(rtsp.RTSP_SCRIPT), "--port", str(port),
                                "--mounts", str(mounts), "--log", str(tmp_path / "rtsp.log")])
    try:
        assert wait_until(lambda: embedded.rtsp_options_ok(port), 20), (tmp_path / "rtsp.log").read_text()
        yield f"rtsp://127.0.0.1:{port}"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


async def test_corrupt_streams_report_errors_and_back_off_while_others_are_fine(media, private_rtsp):
    manager = IngestManager(OPTIONS)
    manager.sync([camera("fine", media.url("small"))])
    fine = manager.source("fine")
    try:
        await until(lambda: fine.state is S, 10, "the healthy camera streams")
        alone = await decoded_rate(fine, 2.0)
        manager.sync([camera("fine", media.url("small")),
                      camera("garbage", f"{private_rtsp}/garbage"),
                      camera("damaged", media.url("damaged"))])
        garbage, damaged = manager.source("garbage"), manager.source("damaged")
        beside = await decoded_rate(fine, 6.0)
        assert beside == pytest.approx(alone, rel=0.15), (alone, beside)
        assert states(fine) == [C, S]

        # garbage bytes: the server never describes a stream; the camera reports it and backs off
        assert S not in states(garbage) and states(garbage).count(B) >= 2, garbage.transitions
        assert garbage.last_error and garbage.stats()["state"] in ("CONNECTING", "BACKING_OFF")

        # damaged H.264: corrupt pictures are counted and skipped up to the next clean keyframe
        stats = damaged.stats()
        assert stats["corrupt"] >= 1 and stats["skipped"] >= stats["corrupt"], stats
        assert stats["analysed"] >= 10, stats
        assert S in states(damaged)
        for thread in (garbage.thread, damaged.thread, fine.thread):
            assert thread.is_alive()
    finally:
        assert await manager.stop() == []


async def test_sync_adds_restarts_and_removes_without_touching_the_other(media):
    manager = IngestManager(OPTIONS)
    keep = camera("keep", media.url("small"), fps=5)
    assert manager.sync([keep])["added"] == ["keep"]
    kept = manager.source("keep")
    thread_id = kept.thread.ident
    drain = Drain(kept.buffer)
    try:
        await until(lambda: kept.state is S, 10, "the first camera streams")
        watch_from = time.monotonic()

        changes = manager.sync([keep, camera("extra", media.url("hd"), fps=2)])
        assert changes == {"added": ["extra"], "removed": [], "restarted": [], "rerated": [], "unchanged": ["keep"]}
        extra = manager.source("extra")
        await until(lambda: extra.analysed >= 3, 10, "the added camera delivers frames")
        assert set(manager.buffers()) == {"keep", "extra"} and set(manager.stats()) == {"keep", "extra"}

        changes = manager.sync([keep, camera("extra", media.url("hd"), fps=2, enabled=False)])
        assert changes["removed"] == ["extra"] and changes["unchanged"] == ["keep"]
        await until(lambda: not extra.alive, OPTIONS.stall_timeout_s + 2, "the removed camera's thread ends")
        assert extra.state is CameraState.STOPPED and set(manager.buffers()) == {"keep"}
        assert metric("rollcall_camera_frames_decoded_total", "extra") is None
        await asyncio.sleep(1.0)

        assert manager.source("keep") is kept and kept.thread.ident == thread_id and kept.alive
        assert states(kept) == [C, S] and drain.max_gap(since=watch_from) < 1.0

        # a changed analysis_fps goes on at the new rate: same source, same thread, no reconnect
        changes = manager.sync([camera("keep", media.url("small"), fps=2)])
        assert changes["rerated"] == ["keep"] and manager.source("keep") is kept and kept.thread.ident == thread_id
        rerated_at = time.monotonic()
        await asyncio.sleep(3.0)
        recent = [t for t in drain.arrivals if t >= rerated_at + 0.5]
        assert 3 <= len(recent) <= 7, f"{len(recent)} frames in 2.5 s at 2 fps"
        assert states(kept) == [C, S], "no reconnect"

        # a changed url restarts that camera only: same buffer, seq goes on
        seq_before = kept.next_seq
        changes = manager.sync([camera("keep", media.url("hd"), fps=2)])
        assert changes["restarted"] == ["keep"]
        restarted = manager.source("keep")
        assert restarted is not kept and restarted.buffer is kept.buffer
        await until(lambda: restarted.analysed >= 2, 10, "the restarted camera delivers frames")
        assert min(f.seq for f in drain.frames if f.captured_at >= restarted.transitions[0].at) >= seq_before
        await until(lambda: not kept.alive, OPTIONS.stall_timeout_s + 2, "the old thread ends")
    finally:
        await drain.stop()
        assert await manager.stop() == []
