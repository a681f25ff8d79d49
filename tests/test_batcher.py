"""The batcher and the drop-oldest frame buffer: pure logic, with frames put from real threads."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from processor.batcher import Batcher, DemandQueue
from processor.frames import Frame, FrameBuffer, materialise

IMAGE = np.zeros((4, 4, 3), np.uint8)


def frame(camera: str, seq: int) -> Frame:
    return Frame(camera_id=camera, seq=seq, pts_s=seq / 10, captured_at=time.time(), image=IMAGE)


async def test_buffer_keeps_newest_and_counts_drops():
    buffer = FrameBuffer("cam", capacity=2, loop=asyncio.get_running_loop())
    for seq in range(5):
        buffer.put(frame("cam", seq))
    assert buffer.dropped == 3
    assert [buffer.take().seq, buffer.take().seq] == [3, 4]
    assert buffer.take() is None and not buffer.ready.is_set()



def _spread_buffer(**kw) -> FrameBuffer:
    return FrameBuffer("room", capacity=4, span_s=2.0, **kw)


def test_spread_buffer_thins_evenly_when_the_stage_falls_behind():
    """A room camera at 4 fps (0.25 s) whose stage took the frame at t=0 and then stalled for 1.75 s:
    drop-oldest would keep 1.0-1.75 (a 1 s jump for the tracker); spread keeps the gaps at 0.5 s."""
    drop_oldest, spread = FrameBuffer("room", capacity=4), _spread_buffer()
    for buffer in (drop_oldest, spread):
        buffer.put(frame("room", 0))
        assert buffer.take().pts_s == 0.0
    for n in range(1, 8):
        f = Frame(camera_id="room", seq=n, pts_s=n * 0.25, captured_at=time.time(), image=IMAGE)
        drop_oldest.put(f)
        spread.put(f)

    def drain(buffer):
        out = []
        while (f := buffer.take()) is not None:
            out.append(f.pts_s)
        return out

    assert drain(drop_oldest) == [1.0, 1.25, 1.5, 1.75]
    kept = drain(spread)
    assert len(kept) == 4 and kept[-1] == 1.75  # the newest is always kept
    gaps = [b - a for a, b in zip([0.0] + kept, kept)]
    assert max(gaps) <= 0.5, kept
    assert spread.dropped == drop_oldest.dropped == 3


def test_spread_buffer_bounds_the_age_of_waiting_frames():
    buffer = _spread_buffer()
    for n in range(40):  # 10 s at 4 fps, nothing taken
        buffer.put(Frame(camera_id="room", seq=n, pts_s=n * 0.25, captured_at=time.time(), image=IMAGE))
    kept = [buffer.take().pts_s for _ in range(len(buffer))]
    assert kept[-1] == 9.75 and kept[0] >= 9.75 - 2.0 and len(kept) == 4
    assert buffer.dropped == 36


def test_spread_buffer_survives_a_stream_restart():
    """After a reconnect the stream time starts again: the old stream's waiting frames give way to the new."""
    buffer = _spread_buffer()
    for n in range(4):
        buffer.put(Frame(camera_id="room", seq=n, pts_s=100 + n * 0.25, captured_at=time.time(), image=IMAGE))
    buffer.take()
    for n in range(4):
        buffer.put(Frame(camera_id="room", seq=10 + n, pts_s=n * 0.25, captured_at=time.time(), image=IMAGE))
    kept = [buffer.take().pts_s for _ in range(len(buffer))]
    assert kept == [0.0, 0.25, 0.5, 0.75] and buffer.dropped == 3

async def test_batch_closes_when_full_round_robin_across_cameras():
    loop = asyncio.get_running_loop()
    buffers = {name: FrameBuffer(name, capacity=4, loop=loop) for name in ("a", "b", "c")}
    for seq in range(4):
        buffers["a"].put(frame("a", seq))
    buffers["b"].put(frame("b", 0))
    buffers["c"].put(frame("c", 0))
    batcher = Batcher(lambda: buffers, max_batch=4, max_wait_s=1.0)
    started = time.monotonic()
    batch = await batcher.next_batch()
    assert time.monotonic() - started < 0.5  # full: no waiting for max_wait
    cameras = [f.camera_id for f in batch]
    assert len(batch) == 4 and set(cameras) == {"a", "b", "c"}  # every camera got a turn


async def test_batch_closes_after_max_wait_with_what_arrived():
    loop = asyncio.get_running_loop()
    buffers = {"a": FrameBuffer("a", capacity=2, loop=loop)}
    batcher = Batcher(lambda: buffers, max_batch=8, max_wait_s=0.1)

    def producer():
        time.sleep(0.05)
        buffers["a"].put(frame("a", 0))
        time.sleep(0.03)
        buffers["a"].put(frame("a", 1))

    thread = threading.Thread(target=producer)
    thread.start()
    started = time.monotonic()
    batch = await batcher.next_batch()
    waited = time.monotonic() - started
    thread.join()
    assert [f.seq for f in batch] == [0, 1]
    assert 0.12 <= waited < 0.5  # first frame at ~0.05 s, then max_wait 0.1 s


async def test_max_wait_counts_from_the_oldest_frames_capture():
    """Frames that waited in their buffers while the stage was busy have waited already: a batch of them
    goes at once, or waits only what is left of max_wait_s."""
    loop = asyncio.get_running_loop()
    buffers = {"a": FrameBuffer("a", capacity=4, loop=loop), "b": FrameBuffer("b", capacity=4, loop=loop)}
    batcher = Batcher(lambda: buffers, max_batch=8, max_wait_s=0.4)
    buffers["a"].put(Frame("a", 0, 0.0, time.time() - 1.0, IMAGE))  # captured a second ago
    started = time.monotonic()
    assert [f.seq for f in await batcher.next_batch()] == [0]
    assert time.monotonic() - started < 0.1  # not another 0.4 s
    buffers["b"].put(Frame("b", 0, 0.0, time.time() - 0.2, IMAGE))  # 0.2 s of its 0.4 s gone
    started = time.monotonic()
    assert [f.seq for f in await batcher.next_batch()] == [0]
    assert 0.15 <= time.monotonic() - started < 0.35


async def test_camera_added_later_is_picked_up():
    loop = asyncio.get_running_loop()
    buffers: dict[str, FrameBuffer] = {}
    batcher = Batcher(lambda: buffers, max_batch=2, max_wait_s=0.01)
    task = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0.05)
    buffers["late"] = FrameBuffer("late", capacity=2, loop=loop)
    buffers["late"].put(frame("late", 7))
    batch = await asyncio.wait_for(task, timeout=2)
    assert [f.seq for f in batch] == [7]


async def test_demand_queue_forms_a_batch_only_when_the_stage_asks():
    """While the stage is busy, frames stay in the drop-oldest buffers (newer ones replace older ones)
    instead of waiting in a batch formed too early."""

    buffer = FrameBuffer("cam", capacity=2, loop=asyncio.get_running_loop())
    batcher = Batcher(lambda: {"cam": buffer}, max_batch=4, max_wait_s=0.0)
    out = DemandQueue()
    task = asyncio.create_task(batcher.run(out))
    try:
        for seq in range(3):
            buffer.put(frame("cam", seq))
        await asyncio.sleep(0.05)
        assert out.empty() and batcher.batches == 0  # nobody asked yet: nothing taken from the buffer
        buffer.put(frame("cam", 3))
        first = await asyncio.wait_for(out.get(), 2.0)
        assert [f.seq for f in first] == [2, 3]  # the two newest: 0 and 1 were replaced in the buffer
        buffer.put(frame("cam", 4))
        await asyncio.sleep(0.05)
        assert out.empty() and batcher.batches == 1  # the stage has not asked again
        second = await asyncio.wait_for(out.get(), 2.0)
        assert [f.seq for f in second] == [4]
    finally:
        task.cancel()


async def test_batcher_stops_when_cancelled_as_a_frame_arrives():
    """Regression: on Python 3.11 asyncio.wait_for drops a cancel that lands in the same loop turn as the
    event it waits on; the batcher then ran on after Processor.stop() and the stop never finished."""
    loop = asyncio.get_running_loop()
    for max_wait_s in (0.0, 1.0):  # cancelled while waiting for a first frame / for a fuller batch
        buffers = {"a": FrameBuffer("a", capacity=4, loop=loop)}
        batcher = Batcher(lambda: buffers, max_batch=8, max_wait_s=max_wait_s)
        out: asyncio.Queue = asyncio.Queue()
        if max_wait_s:
            buffers["a"].put(frame("a", 0))
        task = asyncio.create_task(batcher.run(out))
        await asyncio.sleep(0.05)  # the batcher is now waiting on its wakeup event
        batcher._wakeup.set()  # a frame arrives ...
        task.cancel()  # ... in the same loop turn as the cancel
        done, _ = await asyncio.wait([task], timeout=2)
        assert task in done and task.cancelled(), f"batcher ran on after cancel (max_wait_s={max_wait_s})"


class _Decoded:
    """Stands for a decoder's picture: counts its conversions to BGR."""

    def __init__(self, conversions: list):
        self.conversions = conversions

    def to_ndarray(self, format: str) -> np.ndarray:
        assert format == "bgr24"
        self.conversions.append(1)
        return IMAGE.copy()


async def test_a_frame_is_converted_to_bgr_once_and_only_when_a_stage_takes_it():
    conversions: list = []
    buffer = FrameBuffer("door", capacity=2, loop=asyncio.get_running_loop())
    for seq in range(5):  # three of them shed by the buffer
        buffer.put(Frame("door", seq, seq / 10, time.time(), decoded=_Decoded(conversions)))
    assert buffer.dropped == 3 and conversions == []
    taken = [buffer.take(), buffer.take()]
    assert not any(f.converted for f in taken) and conversions == []
    materialise(taken)
    assert all(f.converted for f in taken) and len(conversions) == 2
    assert taken[0].image.shape == (4, 4, 3) and taken[0].image is taken[0].image and len(conversions) == 2


async def test_a_ranked_batch_takes_only_the_best_ranked_cameras_with_frames():
    """Door b has an undecided face (rank 1), door a nobody (rank 3): a's frames wait for a batch of their
    own instead of riding, and slowing, b's; a better-ranked camera joins a batch being formed."""
    loop = asyncio.get_running_loop()
    buffers = {name: FrameBuffer(name, capacity=4, loop=loop) for name in ("a", "b", "c")}
    ranks = {"a": 3, "b": 1, "c": 0}
    for seq in range(2):
        buffers["a"].put(frame("a", seq))
        buffers["b"].put(frame("b", seq))
    batcher = Batcher(lambda: buffers, max_batch=8, max_wait_s=0.0, rank=ranks.__getitem__)
    assert [f.camera_id for f in await batcher.next_batch()] == ["b", "b"]
    assert [f.camera_id for f in await batcher.next_batch()] == ["a", "a"]
    buffers["a"].put(frame("a", 2))
    buffers["c"].put(frame("c", 0))
    assert [f.camera_id for f in await batcher.next_batch()] == ["c"]
    assert [f.camera_id for f in await batcher.next_batch()] == ["a"]
