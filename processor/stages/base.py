"""What every batched inference stage shares: one entry point that takes a batch of frames from its
inbox, runs the stage's synchronous ``process`` in a worker thread (onnxruntime releases the GIL), and
puts the result on its outbox, with the stage's batch size and time as metrics."""

from __future__ import annotations

import asyncio
import time

from processor import metrics


def require_bgr(images) -> None:
    """Stages take H x W x 3 BGR frames; anything else is a caller's bug, said plainly."""
    for img in images:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected HxWx3 BGR images, got shape {img.shape}")


class BatchStage:
    name = "stage"

    def process(self, batch):  # pragma: no cover - each stage defines it
        raise NotImplementedError

    async def run(self, inbox: asyncio.Queue, outbox: asyncio.Queue) -> None:
        while True:
            batch = await inbox.get()
            started = time.perf_counter()
            results = await asyncio.to_thread(self.process, batch)
            metrics.STAGE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
            await outbox.put(results)
