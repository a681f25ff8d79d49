"""What every batched inference stage shares: one entry point that takes a batch of frames from its
inbox, waits for its turn at the processor's inference gate (by the priority the scheduler gives the
batch's cameras), runs the stage's synchronous ``process`` in a worker thread (onnxruntime releases the
GIL), and puts the result on its outbox, with the stage's batch size and time as metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from processor import metrics
from processor.frames import materialise
from processor.scheduler import Scheduler


def require_bgr(images) -> None:
    """Stages take H x W x 3 BGR frames; anything else is a caller's bug, said plainly."""
    for img in images:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected HxWx3 BGR images, got shape {img.shape}")


class BatchStage:
    name = "stage"
    extra_work: str | None = None  # what ``process`` leaves out for cameras behind their minimum
    scheduler: Scheduler | None = None  # None: no priorities (tests, benchmarks of one stage)
    # the best priority among the frames waiting for this stage's next batch (None: none waiting). A batch
    # formed of low-priority frames (doors nobody new is at) is served at it: the stage, waiting at the
    # gate with that batch, holds back the better frames that came after it (a door's new face)
    waiting_priority: Callable[[], int | None] | None = None
    prepare_always = False  # True: ``prepare`` runs on every batch (it plans the batch), not only to convert

    def process(self, batch, extras_for: frozenset[str] | None = None):  # pragma: no cover - each stage defines it
        """``extras_for``: the cameras whose extra work may be done (None: all)."""
        raise NotImplementedError

    def prepare(self, batch) -> bool:
        """What a batch needs before its turn at the gate (run in a worker thread; frames not taken never
        get it): its frames converted to BGR. False when the batch needs no model call (a stage that can
        tell, e.g. the person stage's motion-gated frames): ``process`` then runs on the event loop without
        the gate."""
        materialise(batch)
        return True

    async def run(self, inbox: asyncio.Queue, outbox: asyncio.Queue) -> None:
        while True:
            batch = await inbox.get()
            models = True
            if self.prepare_always or not all(frame.converted for frame in batch):
                # before the turn at the gate, which is for model calls
                models = await asyncio.to_thread(self.prepare, batch)
            scheduler = self.scheduler
            if not models:
                results = self.process(batch, frozenset())  # no model call: cheap, on the event loop
                if scheduler is not None:
                    for frame in batch:
                        scheduler.analysed(frame.camera_id)
            elif scheduler is None:
                results = await self._timed(batch, None)
            else:
                cameras = [frame.camera_id for frame in batch]
                async with scheduler.gate.turn(lambda: self._priority(scheduler, cameras)):
                    extras = None
                    if self.extra_work is not None:
                        extras = frozenset(c for c in set(cameras) if scheduler.extras_allowed(c, self.extra_work))
                    results = await self._timed(batch, extras)
                for camera_id in cameras:
                    scheduler.analysed(camera_id)
            await outbox.put(results)

    def _priority(self, scheduler: Scheduler, cameras: list[str]) -> int:
        own = scheduler.priority(cameras)
        waiting = self.waiting_priority() if self.waiting_priority is not None else None
        return own if waiting is None else min(own, waiting)

    async def _timed(self, batch, extras_for):
        started = time.perf_counter()
        results = await asyncio.to_thread(self.process, batch, extras_for)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
        return results
