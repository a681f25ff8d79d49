"""The writer's Kafka consumer loop: read, decode and write batches, with the consumer's positions kept
in PostgreSQL instead of Kafka's committed offsets.

A batch's results and its next offsets are written in one transaction (:mod:`consumers.batches`), and on
partition assignment the consumer seeks to the offsets stored there (:class:`RebalanceListener`), so a
batch is either applied with its offsets or not at all. A batch that could not be written (PostgreSQL or
the broker away) rewinds its partitions to the first offset not stored, and the loop retries with backoff.
A partition whose log ends before the stored offset lost its log and is read again from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from tenacity import AsyncRetrying, AttemptManager, RetryCallState

from consumers import store
from consumers.batches import BatchStore, DecodedBatch, decode_batch_yielding
from consumers.failures import DB_ERRORS, one_line
from consumers.read_ahead import ReadAhead
from consumers.records import MessageReader
from consumers.writer_stats import LAG, LOG_RESETS, RETRIES, WriterHealth, WriterStats
from infra.foundation.config import AttendanceWriterConfig
from infra.foundation.retry import connected, reconnecting

log = logging.getLogger("rollcall.writer")


class BatchNotWritten(Exception):
    """The batch in flight was rolled back (the database or the broker away): back off, read it again."""


def until_stopped(retrying: AsyncRetrying, stop: asyncio.Event) -> AsyncRetrying:
    """``retrying`` with its backoff cut short when ``stop`` is set (the next attempt then sees the stop)."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()

    return retrying.copy(sleep=sleep)


class ConsumerLoop:
    """Reads batches from ``consumer`` and writes them with ``batches`` until ``stop`` is set; keeps the
    partitions' positions and tells ``stored`` (the outbox publisher) when a batch was stored."""

    def __init__(self, consumer: AIOKafkaConsumer, settings: AttendanceWriterConfig, *, reader: MessageReader,
                 batches: BatchStore, database_url: str, stats: WriterStats, health: WriterHealth,
                 stop: asyncio.Event, stored: asyncio.Event):
        self.consumer = consumer
        self.settings = settings
        self.group = settings.group_id
        self.reader = reader
        self.batches = batches
        self.database_url = database_url
        self.stats = stats
        self.health = health
        self.stop = stop
        self.stored = stored
        self.batch_lock = asyncio.Lock()  # a rebalance waits for the batch in flight
        self._next: dict[TopicPartition, int | None] = {}  # next offset stored (None: from the start)
        self._read_next: dict[TopicPartition, int | None] = {}  # next offset to decode
        self._inflight: asyncio.Task | None = None  # the batch being written
        self.read_ahead = ReadAhead(consumer, max_records=settings.max_batch, wait_ms=settings.max_wait_ms)

    async def run(self, grace_s: float = 3.0) -> None:
        """Run :meth:`_consume`; once stopped, give it ``grace_s`` to finish its batch, then cancel it:
        aiokafka's getmany waits without a time limit while a rebalance is in progress (say a crashed
        member of the group has not timed out yet), and a stop must not wait for that. Nothing is lost
        by the cancel: what was not stored is read again from the stored offsets."""
        consume = asyncio.create_task(self._consume(), name="writer-consume")
        stopped = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({consume, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not consume.done():
                await asyncio.wait({consume}, timeout=grace_s + self.settings.max_wait_ms / 1000)
            if not consume.done():
                log.info("stopping while the consumer group is still assigning partitions")
                consume.cancel()
                await asyncio.gather(consume, return_exceptions=True)
                if self._inflight is not None:  # a batch being written commits or rolls back on its own
                    await asyncio.gather(self._inflight, return_exceptions=True)
            else:
                consume.result()  # its failure is the writer's
        finally:
            stopped.cancel()
            if not consume.done():
                consume.cancel()

    async def _consume(self) -> None:
        """Read, decode and write batches; decoding batch N+1 overlaps writing batch N (two cores: Python on
        one, PostgreSQL on the other), and fetching the next records overlaps both (:mod:`consumers.read_ahead`).
        A failed write rewinds every partition to its last stored position and backs off, 0.2 s doubling up
        to 10 s while batches keep failing (a round that reads nothing does not reset it; a batch stored does)."""
        retrying = reconnecting(what="batch", errors=(BatchNotWritten,), first_s=0.2, max_s=10.0,
                                on_retry=self._rolled_back)
        self.read_ahead.start()
        try:
            async for attempt in until_stopped(retrying, self.stop):
                with attempt:
                    while not self.stop.is_set():
                        # taken under the lock: a revocation cannot come between taking and decoding
                        async with self.batch_lock:
                            records = await self.read_ahead.take(self.settings.max_wait_ms / 1000)
                            await self._round(records, attempt)
            async with self.batch_lock:
                await self.finish_inflight()
        finally:
            await self.read_ahead.close()

    async def _round(self, records: dict, attempt: AttemptManager) -> None:
        """Decode what was read, collect the batch written meanwhile, and start writing this one."""
        batch = self._contiguous(records)
        decoded = await decode_batch_yielding(self.reader, batch, self.settings.max_batch_spread_s) if batch else None
        failed = await self.finish_inflight()
        if failed is not None:
            self._rewind([failed] + ([decoded] if decoded else []))
            self.health.paused = one_line(failed.error)
            raise BatchNotWritten(self.health.paused)
        if self.health.paused is None:  # a batch was stored since the last failure
            connected(attempt)
        await self.check_log_ends()
        if decoded is not None:
            self._inflight = asyncio.create_task(self.batches.store(decoded))
        else:
            self.observe_lag()  # idle: the gauge still says how far behind the partitions are

    def _rolled_back(self, state: RetryCallState) -> None:
        log.warning("batch not written (%s); rolled back, retrying in %.1f s", self.health.paused,
                    state.next_action.sleep)

    async def finish_inflight(self) -> DecodedBatch | None:
        """Wait for the batch being written; the batch back when it failed (nothing of it committed)."""
        task, self._inflight = self._inflight, None
        if task is None:
            return None
        decoded = await task
        if decoded.error is not None:
            self.stats.retries += 1
            RETRIES.labels(self.group).inc()
            self.batches.drop_connection()
            return decoded
        for tp, (_, last) in decoded.spans.items():
            self._next[tp] = last + 1
        self.observe_lag()
        self.health.last_progress = time.monotonic()
        self.health.paused = None
        self.stored.set()
        return None

    def _rewind(self, batches: list[DecodedBatch]) -> None:
        """Read these batches again: each partition back to the first offset not stored."""
        firsts: dict[Any, int] = {}
        for decoded in batches:
            for tp, (first, _) in decoded.spans.items():
                firsts[tp] = min(first, firsts.get(tp, first))
        for tp, first in firsts.items():
            if tp in self.consumer.assignment():
                self.read_ahead.discard(tp)
                self.consumer.seek(tp, first)
                self._read_next[tp] = first

    def _contiguous(self, batch: dict) -> dict:
        """Of ``batch`` ({partition: [chunk, ...]}, as read ahead), only the records that continue from where
        reading left off, on partitions whose assignment is done; {partition: records in offset order}.

        aiokafka may hand out records fetched from the reset position while the assignment listener is
        still reading the stored offsets; those (and anything before the stored position) are skipped.
        """
        kept = {}
        for tp, chunks in batch.items():
            if tp not in self._read_next:
                continue  # assignment not finished (or revoked): the listener seeks
            expected, records = self._read_next[tp], []
            for chunk in chunks:  # each in offset order (one fetch)
                if expected is not None and chunk[0].offset < expected:
                    chunk = [r for r in chunk if r.offset >= expected]
                if chunk:
                    records += chunk
                    expected = chunk[-1].offset + 1
            if records:
                kept[tp] = records
                self._read_next[tp] = expected
        return kept

    # ------------------------------------------------------------------------------- rebalances
    async def release(self, revoked: list[TopicPartition]) -> None:
        """On revocation: let the batch in flight finish, then forget the partitions' positions."""
        async with self.batch_lock:
            await self.finish_inflight()  # a failed batch is read again by the next owner
            for tp in revoked:
                self.read_ahead.discard(tp)
                self._next.pop(tp, None)
                self._read_next.pop(tp, None)

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """On assignment: continue from the offsets stored with the results (retrying while PostgreSQL is away)."""
        if not assigned:
            return
        async for attempt in reconnecting(what="stored offsets", errors=DB_ERRORS, first_s=0.5, max_s=10.0,
                                          on_retry=_cannot_read_offsets):
            with attempt:
                offsets = await self._stored_offsets(assigned)
        for tp in assigned:
            stored = offsets.get((tp.topic, tp.partition))
            # positions first: what is read after the seek (during seek_to_beginning's wait) is kept
            self._next[tp] = stored
            self._read_next[tp] = stored
            self.read_ahead.discard(tp)  # read from the reset position
            if stored is not None:
                self.consumer.seek(tp, stored)
            else:  # records fetched before this point were skipped (see _contiguous): read from the start
                await self.consumer.seek_to_beginning(tp)
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{offsets.get((tp.topic, tp.partition), 'start')}"
                                          for tp in sorted(assigned)))

    async def _stored_offsets(self, assigned: list[TopicPartition]) -> dict[tuple[str, int], int]:
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return await store.stored_offsets(conn, self.group, [(tp.topic, tp.partition) for tp in assigned])
        finally:
            await conn.close()

    # -------------------------------------------------------------------------------- lost logs
    async def check_log_ends(self) -> None:
        """A partition whose log (as the last fetch saw it) ends before the offset stored for it lost its
        log: every new event would be skipped up to the stored offset. Record it, say it, read it again
        from its beginning. While PostgreSQL is away this waits for the next round."""
        for tp in list(self.consumer.assignment()):
            stored, end = self._next.get(tp), self.consumer.highwater(tp)
            if stored is None or end is None or end >= stored:
                continue
            LAG.labels(self.group, tp.topic, str(tp.partition)).set(end - stored)  # negative: say it
            try:
                await store.forget_offset(await self.batches.connection(), self.group, tp.topic, tp.partition,
                                          stored, end)
            except DB_ERRORS as exc:
                log.warning("cannot record the lost log of %s[%d] (%s); trying again", tp.topic, tp.partition,
                            one_line(exc))
                self.batches.drop_connection()
                return
            await self._read_again(tp, stored, end)

    async def _read_again(self, tp: TopicPartition, stored: int, end: int) -> None:
        """Say that the log of ``tp`` was lost (its lost log is recorded) and read it from its beginning."""
        log.error("the broker's log of %s[%d] ends at offset %d, but %d messages of it are stored: the log was "
                  "lost (a broker without persistence restarted, or the topic was deleted and made again); "
                  "reading the partition again from its beginning (recorded in audit_log as writer.log_lost)",
                  tp.topic, tp.partition, end, stored)
        LOG_RESETS.labels(self.group, tp.topic, str(tp.partition)).inc()
        self.stats.log_resets += 1
        self.health.log_resets.append({"topic": tp.topic, "partition": tp.partition, "stored_next_offset": stored,
                                       "log_end": end, "at": dt.datetime.now(dt.timezone.utc).isoformat()})
        self._next[tp] = None
        self._read_next[tp] = None
        self.read_ahead.discard(tp)
        await self.consumer.seek_to_beginning(tp)

    def observe_lag(self) -> None:
        for tp in self.consumer.assignment():
            end, stored = self.consumer.highwater(tp), self._next.get(tp)
            if end is not None:  # nothing stored yet: all of it (from the start) is to come. Not clamped:
                # a negative lag is a log that ends before what is stored (see check_log_ends)
                LAG.labels(self.group, tp.topic, str(tp.partition)).set(end - (stored or 0))


class RebalanceListener(ConsumerRebalanceListener):
    """aiokafka rebalance listener: wait for the batch in flight before giving partitions up; seek to the
    stored offsets when given some."""

    def __init__(self, loop: ConsumerLoop):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):
        await self.loop.release(revoked)

    async def on_partitions_assigned(self, assigned):
        self.loop.stats.assignments += 1
        self.loop.stats.partitions = len(assigned)
        await self.loop.seek_to_stored(assigned)


def _cannot_read_offsets(state: RetryCallState) -> None:
    log.warning("cannot read stored offsets (%s); retrying in %.1f s", one_line(state.outcome.exception()),
                state.next_action.sleep)
