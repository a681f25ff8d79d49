"""What every batched inference stage shares: one entry point that takes a batch of frames from its
inbox, runs the stage's synchronous ``process`` in a worker thread (onnxruntime releases the GIL), and
puts the result on its outbox, with the stage's batch size and time as metrics."""

from __future__ import annotations

import asyncio
import time

from processor import metrics


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
