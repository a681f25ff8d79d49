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
    in_flight = 1  # batches between the inbox and the outbox at once (taken, converting, at the gate, in a call)
    # True: a camera's next batch starts only once the round with its last frames is over (a stage whose
    # work on a frame follows from the camera's last result, as the room's motion plans do)
    one_round_per_camera = False
    # whether a batch waiting at the gate is held back while an owed camera of this stage's own role has
    # frames waiting (the gate's hold): yes for the doors, whose batcher takes owed cameras first, so the
    # stage's next round brings that camera's frames; no for the rooms, whose batcher goes round-robin: their
    # next batch is no likelier the owed camera's, and holding one would only delay both
    held_for_own_role = True

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
        """Entry point: batches from ``inbox``, results to ``outbox`` in the order the batches came. With
        ``in_flight`` above 1 the next batches are taken, converted and queued at the gate while earlier ones
        are still in their model call; their results still leave in order (per-camera tracking needs it)."""
        if self.in_flight <= 1:
            while True:
                await outbox.put(await self._round(await inbox.get()))
        try:
            await self._overlapped(inbox, outbox)
        except ExceptionGroup as failed:  # the supervisor says one stage failure, not a group of one
            raise failed.exceptions[0] from None

    async def _overlapped(self, inbox: asyncio.Queue, outbox: asyncio.Queue) -> None:
        """Up to ``in_flight`` rounds running at once, their results put in the order their batches were
        taken. A round's place is freed when it is over, not when its result leaves: a round with no model
        call (the person stage's coasted frames) is over in a moment, and the next batch can be prepared
        while the slow round before it is still in its call; ``2 * in_flight`` bounds the rounds over and
        waiting behind it. One task group holds them: a failed round stops the others, and so does the
        stage being stopped."""
        running = asyncio.Semaphore(self.in_flight)
        unsent = asyncio.Semaphore(2 * self.in_flight)
        rounds: asyncio.Queue[asyncio.Task] = asyncio.Queue()
        latest: dict[str, asyncio.Task] = {}  # one_round_per_camera: each camera's last round

        async def take(group: asyncio.TaskGroup) -> None:
            while True:
                await unsent.acquire()
                await running.acquire()
                batch = await inbox.get()
                round_ = group.create_task(self._round_after(self._earlier(batch, latest), batch))
                round_.add_done_callback(lambda _: running.release())
                if self.one_round_per_camera:
                    latest.update((frame.camera_id, round_) for frame in batch)
                rounds.put_nowait(round_)

        async def give() -> None:
            while True:
                results = await (await rounds.get())
                unsent.release()
                await outbox.put(results)

        async with asyncio.TaskGroup() as group:
            group.create_task(take(group))
            group.create_task(give())

    def _earlier(self, batch, latest: dict[str, asyncio.Task]) -> set[asyncio.Task]:
        """The rounds not over yet that this batch must wait for (``one_round_per_camera``); forgets those over."""
        if not self.one_round_per_camera:
            return set()
        for camera_id in [c for c, round_ in latest.items() if round_.done()]:
            del latest[camera_id]
        return {latest[frame.camera_id] for frame in batch if frame.camera_id in latest}

    async def _round_after(self, earlier: set[asyncio.Task], batch):
        if earlier:
            await asyncio.wait(earlier)
        return await self._round(batch)

    async def _round(self, batch):
        """One batch: converted, its turn at the gate, the model call, its cameras marked analysed."""
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
            return results
        if scheduler is None:
            return await self._timed(batch, None)
        cameras = [frame.camera_id for frame in batch]
        exempt = () if self.held_for_own_role else cameras
        async with scheduler.gate.turn(lambda: self._priority(scheduler, cameras), cameras=exempt):
            extras = None
            if self.extra_work is not None:
                extras = frozenset(c for c in set(cameras) if scheduler.extras_allowed(c, self.extra_work))
            results = await self._timed(batch, extras)
        for camera_id in cameras:
            scheduler.analysed(camera_id)
        return results

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
