"""Reading ahead for the writer's consumer loop: the records aiokafka fetched are taken off it as soon as
they arrive, so that it sends the next fetch while the previous records are still decoded and written.

aiokafka fetches a partition again only once everything fetched from it was handed out (``getmany``), and
one fetch at a time per broker. Read in turn with the decoding and the writing, every batch first waited
for its fetch (most of it the response coming in, paced by the busy event loop); read ahead, the fetches
overlap the work on the batches before. At most ``max_records`` wait here (then aiokafka stops fetching).

Records held here were read at the consumer's position when they were fetched: a seek makes those of its
partition stale. :meth:`ReadAhead.discard` drops them; it is called together with every seek (in the same
step of the event loop, so nothing is read in between), and what ``getmany`` hands out after a seek is
read from the new position.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class ReadAhead:
    """Drains ``consumer`` in a task of its own into per-partition chunks (in offset order), up to
    ``max_records``; :meth:`take` hands them out."""

    def __init__(self, consumer: AIOKafkaConsumer, *, max_records: int, wait_ms: int):
        self.consumer = consumer
        self.max_records = max_records
        self.wait_ms = wait_ms
        self._chunks: dict[TopicPartition, list[list[Any]]] = {}  # per partition, as getmany gave them
        self._count = 0
        self._arrived = asyncio.Event()  # something waits to be taken (or the reading failed)
        self._room = asyncio.Event()  # fewer than max_records wait
        self._room.set()
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name="writer-read-ahead")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _read(self) -> None:
        try:
            while True:
                await self._room.wait()
                records = await self.consumer.getmany(timeout_ms=self.wait_ms,
                                                      max_records=self.max_records - self._count)
                # no await from getmany's return to here: a discard() came before these were handed out
                for tp, chunk in records.items():
                    if chunk:
                        self._chunks.setdefault(tp, []).append(chunk)
                        self._count += len(chunk)
                if self._count >= self.max_records:
                    self._room.clear()
                if self._chunks:
                    self._arrived.set()
        except Exception as exc:  # noqa: BLE001 - the consumer's failure: take() raises it in the loop
            self._error = exc
            self._arrived.set()

    async def take(self, timeout_s: float) -> dict[TopicPartition, list[list[Any]]]:
        """What was read ({partition: [chunk, ...]}, each chunk in offset order), waiting up to ``timeout_s``
        for something when nothing is there; raises what made reading fail."""
        if not self._chunks and self._error is None:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
        if self._error is None and self._task is not None and self._task.done():
            self._error = RuntimeError("the writer's read-ahead stopped")  # cancelled from within aiokafka
        if self._error is not None:
            raise self._error
        taken, self._chunks, self._count = self._chunks, {}, 0
        self._arrived.clear()
        self._room.set()
        return taken

    def discard(self, tp: TopicPartition) -> None:
        """Drop what was read of ``tp``: the caller seeks it (in the same step, without awaiting between)."""
        chunks = self._chunks.pop(tp, None)
        if chunks:
            self._count -= sum(len(chunk) for chunk in chunks)
            if self._count < self.max_records:
                self._room.set()
            if not self._chunks:
                self._arrived.clear()
