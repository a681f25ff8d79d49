"""The batcher: gathers frames from many cameras into one inference batch.

A batch closes when it holds ``max_batch`` frames or ``max_wait_s`` has passed since its first frame was
captured, whichever comes first (the idea of DeepStream's nvstreammux and Roboflow's InferencePipeline). Cameras
are visited round-robin, one frame each per pass, so a busy camera cannot starve the others. Each
stage that batches has its own batcher over its own cameras (door cameras for faces, room cameras
for persons).

Given ``rank`` (a camera's priority at the inference gate, lower first: processor/scheduler.py), a batch
takes only the frames of the best-ranked cameras that have frames waiting; the others wait for a batch of
their own. A batch goes to the gate at the priority of its best camera, so frames of idle doors bundled
with those of a door being recognised would be served ahead of the rooms, and make that batch, and the
recognition waiting on it, slower.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Mapping

from processor.frames import Frame, FrameBuffer


class Batcher:
    def __init__(self, buffers: Callable[[], Mapping[str, FrameBuffer]], *, max_batch: int = 8,
                 max_wait_s: float = 0.02, rank: Callable[[str], int] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._buffers = buffers
        self.rank = rank  # camera id -> its priority (None: every camera alike)
        self._rank_limit: int | None = None  # the batch being formed takes cameras of this rank or better
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._wakeup = asyncio.Event()
        self._start = 0  # round-robin position
        self.batches = 0
        self.frames = 0

    def _current(self) -> list[FrameBuffer]:
        buffers = list(self._buffers().values())
        for buffer in buffers:
            if buffer.wakeup is not self._wakeup:
                buffer.wakeup = self._wakeup
        return buffers

    def _collect(self, batch: list[Frame], buffers: list[FrameBuffer]) -> None:
        """One round-robin sweep after another until the batch is full or every buffer is empty."""
        if not buffers:
            return
        if self.rank is not None:
            buffers = self._best_ranked(buffers)
            if not buffers:
                return
        progressed = True
        while len(batch) < self.max_batch and progressed:
            progressed = False
            for offset in range(len(buffers)):
                if len(batch) >= self.max_batch:
                    break
                buffer = buffers[(self._start + offset) % len(buffers)]
                frame = buffer.take()
                if frame is not None:
                    batch.append(frame)
                    progressed = True
        self._start = (self._start + 1) % len(buffers)

    def _best_ranked(self, buffers: list[FrameBuffer]) -> list[FrameBuffer]:
        """The buffers with frames whose camera ranks best (and no worse than the batch so far)."""
        ranks = {id(buffer): self.rank(buffer.camera_id) for buffer in buffers if len(buffer)}
        if not ranks:
            return []
        best = min(ranks.values())
        self._rank_limit = best if self._rank_limit is None else min(best, self._rank_limit)
        return [buffer for buffer in buffers if ranks.get(id(buffer), self._rank_limit + 1) <= self._rank_limit]

    async def next_batch(self) -> list[Frame]:
        """Wait for at least one frame, then up to max_wait_s more for a full batch."""
        batch: list[Frame] = []
        self._rank_limit = None
        while not batch:
            self._wakeup.clear()
            self._collect(batch, self._current())
            if not batch:
                try:
                    # the timeout also picks up cameras added since the last look
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that arrives
                    # in the same loop turn as the event, and the batcher would then never stop
                    async with asyncio.timeout(0.5):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        deadline = time.monotonic() + self._wait_left(batch)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            self._collect(batch, self._current())
            if len(batch) >= self.max_batch:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                self._collect(batch, self._current())
                break
        self.batches += 1
        self.frames += len(batch)
        return batch

    def _wait_left(self, batch: list[Frame]) -> float:
        """How much longer a fuller batch may be waited for: ``max_wait_s`` counts from the capture of the
        batch's oldest frame, not from the moment it was taken. Frames that waited in their buffers while
        the stage was busy have waited already (measured on the eight doors of `bench faces`: the models sat
        idle 40 % of the time, three quarters of it while the batcher waited out its 20 ms afresh after
        every call)."""
        waited = time.time() - min(frame.captured_at for frame in batch)
        return min(self.max_wait_s, max(0.0, self.max_wait_s - waited))

    async def run(self, out: asyncio.Queue) -> None:
        """Entry point: put batches on ``out`` (bounded: back-pressure leaves frames in the drop-oldest
        buffers). With a :class:`DemandQueue` a batch is formed only when its stage asks for one, so
        while the stage is busy the frames wait in the buffers, where newer ones replace them, instead
        of ageing in a batch formed too early."""
        while True:
            if isinstance(out, DemandQueue):
                await out.wait_for_demand()
            await out.put(await self.next_batch())


class DemandQueue(asyncio.Queue):
    """A one-item queue between a batcher and its stage that tells the batcher when the stage is waiting."""

    def __init__(self) -> None:
        super().__init__(maxsize=1)
        self._wanted = asyncio.Event()

    async def get(self):
        if self.empty():
            self._wanted.set()
        return await super().get()

    async def wait_for_demand(self) -> None:
        await self._wanted.wait()
        self._wanted.clear()
