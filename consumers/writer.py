"""The attendance writer: a Kafka consumer group on the presence and recognition topics that writes
attendance into PostgreSQL exactly once, and publishes every attendance change on the attendance topic.

Exactly once without Kafka transactions: a batch's results and the consumer's next offsets are written in
one PostgreSQL transaction (:mod:`consumers.store`), and on partition assignment the consumer seeks to the
offsets stored there, so a batch is either applied with its offsets or not at all. Events are also
de-duplicated on ``event_id`` (a producer retry sends the same event twice). Kafka's own committed offsets
are not used.

Failures: anything a message's content can cause is that message's problem. A message that cannot be
used (:mod:`consumers.records`: not JSON, too deeply nested, a schema violation, text PostgreSQL cannot
store, event times outside the plausibility bounds, far from the rest of its batch) goes to the dead-letter
topic with the reason (counted in ``consumer_dead_letter`` with the offsets); so does a message PostgreSQL
refuses for its data (SQLSTATE classes 21, 22, 23, 54, or a value the driver cannot convert): the batch is
bisected to find it, and the rest of the batch is stored. A dead letter keeps at most
``dead_letter_max_value_bytes`` of the value (flagged ``truncated``), so it always fits the producer's limit.
Only PostgreSQL or the broker being away (or failing otherwise) pauses the writer: the batch is rolled back,
the partitions are rewound to the batch's first offsets and the writer retries with exponential backoff:
nothing is committed and nothing is lost.

A broker that lost its log (the bundled broker keeps messages in memory; a topic deleted and made again)
ends a partition before the offset stored for it. The writer notices it from the log's end (the high
watermark of a fetch), says so (an error line, ``rollcall_writer_log_resets_total``, :meth:`health`), records
it in ``audit_log`` (``writer.log_lost``) and reads that partition again from its beginning (events already
stored are de-duplicated on event_id).

Attendance changes go out through a transactional outbox (``attendance_outbox``, written with the change)
that a second task sends to the attendance topic and deletes once the broker acknowledged it; several
writers share it with ``FOR UPDATE SKIP LOCKED``. Scaling out is starting more writers in the same group
(up to the partition count of the topics).

Where things are: this module starts and stops the clients and the two tasks; :mod:`consumers.consumer_loop`
reads batches and keeps the positions (rebalances, rewinds, lost logs), fetching ahead of the batches
(:mod:`consumers.read_ahead`); :mod:`consumers.batches` decodes and writes a batch (bisection);
:mod:`consumers.dead_letters`; :mod:`consumers.housekeeping` (outbox, clock, purge); :mod:`consumers.failures`
(whose fault a failure is); :mod:`consumers.writer_stats` (metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

import aiokafka.conn
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tenacity import RetryCallState

from consumers import store
from consumers.batches import BatchStore
from consumers.consumer_loop import ConsumerLoop, RebalanceListener, until_stopped
from consumers.dead_letters import DeadLetterSender, dead_letter_event
from consumers.failures import content_error, one_line
from consumers.housekeeping import Housekeeper, attendance_event
from consumers.records import MessageReader, TimeBounds
from consumers.writer_stats import WriterHealth, WriterStats
from infra.foundation.config import Config
from infra.foundation.retry import reconnecting

__all__ = ["AttendanceWriter", "WriterStats", "attendance_event", "content_error", "dead_letter_event"]

log = logging.getLogger("rollcall.writer")

FETCH_MAX_BYTES = 32 * 1024 * 1024
# aiokafka reads a broker's response through a StreamReader whose limit (64 KiB) stops reading the socket
# once 128 KiB wait in it, until the task reading the response runs again: a fetch of several MiB then
# takes two turns of the busy event loop (decoding, the batch's COPY) per 128 KiB instead of one per 256
# KiB. A response is held whole in memory before it is used anyway, so a limit of the largest fetch costs
# nothing more. aiokafka has no setting for it: its module constant is read at every connection.
_READER_LIMIT = FETCH_MAX_BYTES


class AttendanceWriter:
    """One member of the writer's consumer group: :meth:`run` until :meth:`stop`."""

    def __init__(self, config: Config, *, database_url: str, bootstrap_servers: str, client_id: str | None = None):
        self.config = config
        self.settings = config.attendance
        self.database_url = database_url
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id or f"{config.kafka.client_id}-writer"
        topics = config.kafka.topics
        self.topic_types = {topics.presence.name: "presence", topics.recognitions.name: "recognition"}
        self.reader = MessageReader(self.topic_types, full_validation=self.settings.full_validation,
                                    bounds=TimeBounds.from_settings(self.settings))
        self.stats = WriterStats()
        self.status = WriterHealth()  # what health() reports
        self.timetable = store.TimetableCache()
        self._outbox_wakeup = asyncio.Event()  # a batch was stored: its attendance changes are in the outbox
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batches: BatchStore | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; PostgreSQL or the broker being away only delays it."""
        self._producer, self._consumer = self._clients()
        dead_letters = DeadLetterSender(self._producer, topic=self.config.kafka.topics.dead_letter.name,
                                        group=self.settings.group_id,
                                        max_value_bytes=self.settings.dead_letter_max_value_bytes)
        self._batches = BatchStore(self.settings, database_url=self.database_url, dead_letters=dead_letters,
                                   stats=self.stats, timetable=self.timetable)
        loop = ConsumerLoop(self._consumer, self.settings, reader=self.reader, batches=self._batches,
                            database_url=self.database_url, stats=self.stats, health=self.status, stop=self._stop,
                            stored=self._outbox_wakeup)
        housekeeping = None
        try:
            if not await self._start_with_retry():
                return  # stopped before the broker could be reached
            self._consumer.subscribe(list(self.topic_types), listener=RebalanceListener(loop))
            housekeeper = Housekeeper(self.config, database_url=self.database_url, producer=self._producer,
                                      stats=self.stats, stop=self._stop, wakeup=self._outbox_wakeup)
            housekeeping = asyncio.create_task(housekeeper.run(), name="writer-housekeeping")
            # Batches keep tens of thousands of records alive, so the cyclic garbage collector's full passes
            # come every few batches, and each one walks every object of the process (the libraries' too):
            # what exists now (clients connected, modules loaded) is long-lived, so it is left out of them.
            # Objects frozen are still freed by reference counting; only cycles among them wait for the unfreeze.
            gc.freeze()
            await loop.run()
        finally:
            gc.unfreeze()  # the process collects as before once the writer stops (tests start many writers)
            self._stop.set()  # also ends housekeeping should its cancellation be lost in a wait_for race
            if housekeeping is not None:
                housekeeping.cancel()
                await asyncio.gather(housekeeping, return_exceptions=True)
            await self._close()

    def _clients(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        """The producer (dead letters, attendance events) and the group's consumer, not started yet."""
        kafka = self.config.kafka
        aiokafka.conn.READER_LIMIT = max(aiokafka.conn.READER_LIMIT, _READER_LIMIT)
        # max_request_size stated (aiokafka's default): dead letters are cut to fit well under it
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                    enable_idempotence=kafka.enable_idempotence,
                                    security_protocol=kafka.security_protocol, linger_ms=5,
                                    max_request_size=1024 * 1024)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", security_protocol=kafka.security_protocol,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            rebalance_timeout_ms=self.settings.rebalance_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=FETCH_MAX_BYTES)
        return producer, consumer

    async def _start_with_retry(self) -> bool:
        """Connect to the broker, retrying while it is away (0.5 s doubling up to 10 s); False when stopped
        first."""
        # any Exception: aiokafka's KafkaConnectionError and friends
        retrying = reconnecting(what="broker", errors=(Exception,), first_s=0.5, max_s=10.0,
                                on_retry=self._broker_away)
        async for attempt in until_stopped(retrying, self._stop):
            with attempt:
                if self._stop.is_set():
                    return False
                await self._producer.start()
                await self._consumer.start()
                return True
        return False

    def _broker_away(self, state: RetryCallState) -> None:
        log.warning("cannot reach the broker at %s (%s); retrying in %.1f s", self.bootstrap_servers,
                    one_line(state.outcome.exception()), state.next_action.sleep)

    async def _close(self) -> None:
        # bounded: leaving a group in the middle of a rebalance can wait on the broker
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self._consumer.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self._producer.stop()
        await self._batches.close()

    def health(self) -> dict[str, Any]:
        """How the writer is: 'ok', 'paused' (the last batch was not written: database or broker away) or
        'log_lost' (a partition's log was lost since it started: see log_resets)."""
        return self.status.report(self.stats)

    async def caught_up(self) -> bool:
        """True when every assigned partition is stored up to its end and the outbox is empty. The end is
        the high watermark of the last fetch response (Tansu's ListOffsets answers the base offset of the
        last batch + 1, not the end)."""
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return False
        assigned = list(consumer.assignment())
        ends = {tp: consumer.highwater(tp) for tp in assigned}
        if any(end is None for end in ends.values()):
            return False
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            stored = await store.stored_offsets(conn, self.settings.group_id,
                                                [(tp.topic, tp.partition) for tp in assigned])
            pending = await conn.fetchval("SELECT count(*) FROM attendance_outbox")
        finally:
            await conn.close()
        # == not >=: stored past the log's end is a lost log (see check_log_ends), not caught up
        return pending == 0 and all(stored.get((tp.topic, tp.partition), 0) == ends[tp] for tp in assigned)
