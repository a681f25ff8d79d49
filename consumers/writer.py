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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from consumers import store
from consumers.records import DeadLetter, MessageReader, TimeBounds, batch_outliers, clean_reason
from consumers.sessions import close_due_sessions
from infra.foundation import metrics
from infra.foundation.config import Config
from schemas.events import build_event, encode, now_timestamp
from consumers.privacy import purge

log = logging.getLogger("rollcall.writer")

# Prometheus metrics (served by `rollcall attendance writer --metrics-port`), labelled by consumer group.
MESSAGES = metrics.get_or_create(metrics.Counter, "rollcall_writer_messages", "Messages read from the event topics",
                                 labelnames=["group"])
EVENT_OUTCOMES = metrics.get_or_create(metrics.Counter, "rollcall_writer_events",
                                       "Messages by outcome: stored (new), duplicate, dead_letter",
                                       labelnames=["group", "outcome"])
ATTENDANCE_CHANGES = metrics.get_or_create(metrics.Counter, "rollcall_writer_attendance_changes",
                                           "Attendance rows created or changed", labelnames=["group"])
ATTENDANCE_PUBLISHED = metrics.get_or_create(metrics.Counter, "rollcall_writer_attendance_events_published",
                                             "Attendance events sent from the outbox", labelnames=["group"])
RETRIES = metrics.get_or_create(metrics.Counter, "rollcall_writer_batch_retries",
                                "Batches rolled back and read again (database or broker away)", labelnames=["group"])
BATCH_SECONDS = metrics.get_or_create(metrics.Histogram, "rollcall_writer_batch_seconds",
                                      "Writing one batch and its offsets in one transaction", labelnames=["group"],
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG = metrics.get_or_create(metrics.Gauge, "rollcall_writer_lag_messages",
                            "Messages on a partition not yet stored (high watermark of the last fetch - next offset; "
                            "negative: the broker's log ends before what is stored, see log resets)",
                            labelnames=["group", "topic", "partition"])
LOG_RESETS = metrics.get_or_create(metrics.Counter, "rollcall_writer_log_resets",
                                   "Partitions whose log ended before the stored offset (log lost or topic made "
                                   "again): read again from the beginning", labelnames=["group", "topic", "partition"])
ISOLATED = metrics.get_or_create(metrics.Counter, "rollcall_writer_batches_bisected",
                                 "Batches PostgreSQL refused for a message's data, bisected to dead-letter that message",
                                 labelnames=["group"])

_DB_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)
_DEAD_LETTER_NS = uuid.UUID("6f0d3c1e-4a7b-4f7e-9a53-0d1f2e3c4b5a")
# SQLSTATE classes of errors a message's data causes: cardinality violation, data exception, integrity
# constraint violation, program limit exceeded (say an index row too large). Any other is the database's.
_CONTENT_SQLSTATES = ("21", "22", "23", "54")
# Python errors that converting a message's values can raise (asyncpg's client-side DataError is a ValueError).
_CONTENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, ArithmeticError, RecursionError,
                                                    LookupError)
_DEAD_LETTER_KEY_BYTES = 4096


def _db_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (*_DB_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError)


def content_error(exc: BaseException) -> bool:
    """Whether the database work failed because of the data it was given (not because it is away)."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in _CONTENT_SQLSTATES
    return isinstance(exc, _CONTENT_ERRORS) and not isinstance(exc, OSError)


@dataclass
class WriterStats:
    batches: int = 0
    messages: int = 0
    events: int = 0  # sightings stored (new, de-duplicated)
    duplicates: int = 0
    dead_letters: int = 0
    attendance_changes: int = 0
    published: int = 0
    retries: int = 0
    bisected: int = 0  # batches PostgreSQL refused for a message's data
    log_resets: int = 0  # partitions read again because the broker's log ended before the stored offset
    housekeeping_errors: int = 0  # rounds of the clock / outbox / purge that failed (and were retried)
    started: float = field(default_factory=time.monotonic)


class AttendanceWriter:
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
        self.log_resets: list[dict[str, Any]] = []  # what health() reports
        self._paused: str | None = None  # why the last batch was not written (None: it was)
        self.timetable = store.TimetableCache()
        self._batch_lock = asyncio.Lock()  # a rebalance waits for the batch in flight
        self._outbox_wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._consumer = None
        self._producer = None
        self._conn = None
        self._last_progress = time.monotonic()
        self._next: dict[Any, int | None] = {}  # partition -> next offset stored (None: from the start)
        self._read_next: dict[Any, int | None] = {}  # partition -> next offset to decode
        self._inflight: asyncio.Task | None = None  # the batch being written

    # ------------------------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; PostgreSQL or the broker being away only delays it."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        # max_request_size stated (aiokafka's default): dead letters are cut to fit well under it
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                          enable_idempotence=self.config.kafka.enable_idempotence,
                                          security_protocol=self.config.kafka.security_protocol, linger_ms=5,
                                          max_request_size=1024 * 1024)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            security_protocol=self.config.kafka.security_protocol,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            rebalance_timeout_ms=self.settings.rebalance_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
        housekeeping = None
        try:
            if not await self._start_with_retry():
                return  # stopped before the broker could be reached
            self._consumer.subscribe(list(self.topic_types), listener=_Rebalance(self))
            housekeeping = asyncio.create_task(self._housekeeping(), name="writer-housekeeping")
            await self._consume_until_stopped()
        finally:
            self._stop.set()  # also ends housekeeping should its cancellation be lost in a wait_for race
            if housekeeping is not None:
                housekeeping.cancel()
                await asyncio.gather(housekeeping, return_exceptions=True)
            # bounded: leaving a group in the middle of a rebalance can wait on the broker
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self._consumer.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self._producer.stop()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()

    async def _consume_until_stopped(self, grace_s: float = 3.0) -> None:
        """Run :meth:`_consume`; once stopped, give it ``grace_s`` to finish its batch, then cancel it:
        aiokafka's getmany waits without a time limit while a rebalance is in progress (say a crashed
        member of the group has not timed out yet), and a stop must not wait for that. Nothing is lost
        by the cancel: what was not stored is read again from the stored offsets."""
        consume = asyncio.create_task(self._consume(), name="writer-consume")
        stopped = asyncio.create_task(self._stop.wait())
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

    async def _start_with_retry(self) -> bool:
        """Connect to the broker, retrying while it is away; False when stopped first."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self._producer.start()
                await self._consumer.start()
                return True
            except Exception as exc:  # aiokafka's KafkaConnectionError and friends
                log.warning("cannot reach the broker at %s (%s); retrying in %.1f s", self.bootstrap_servers,
                            _one_line(exc), delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
        return False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _connection(self):
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.database_url, timeout=10)
            await store.prepare(self._conn)
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
        self._conn = None

    # -------------------------------------------------------------------------------------- batches
    async def _consume(self) -> None:
        """Read, decode and write batches; decoding batch N+1 overlaps writing batch N (two cores: Python on
        one, PostgreSQL on the other). A failed write rewinds every partition to its last stored position."""
        delay = 0.2
        while not self._stop.is_set():
            records = await self._consumer.getmany(timeout_ms=self.settings.max_wait_ms,
                                                   max_records=self.settings.max_batch)
            async with self._batch_lock:
                batch = self._contiguous(records)
                decoded = self._decode(batch) if batch else None
                failed = await self._finish_inflight()
                if failed is not None:
                    self._rewind([failed] + ([decoded] if decoded else []))
                    self._paused = _one_line(failed.error)
                    log.warning("batch not written (%s); rolled back, retrying in %.1f s", self._paused, delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if self._paused is None:  # a batch was stored since the last failure
                    delay = 0.2
                await self._check_log_ends()
                if decoded is not None:
                    self._inflight = asyncio.create_task(self._store(decoded))
                else:
                    self._observe_lag()  # idle: the gauge still says how far behind the partitions are
        async with self._batch_lock:
            failed = await self._finish_inflight()

    async def _finish_inflight(self) -> "_Decoded | None":
        """Wait for the batch being written; the batch back when it failed (nothing of it committed)."""
        task, self._inflight = self._inflight, None
        if task is None:
            return None
        decoded = await task
        if decoded.error is not None:
            self.stats.retries += 1
            RETRIES.labels(self.settings.group_id).inc()
            await self._drop_connection()
            return decoded
        for tp, (_, last) in decoded.spans.items():
            self._next[tp] = last + 1
        self._observe_lag()
        self._last_progress = time.monotonic()
        self._paused = None
        self._outbox_wakeup.set()
        return None

    def _rewind(self, batches: list["_Decoded"]) -> None:
        """Read these batches again: each partition back to the first offset not stored."""
        firsts: dict[Any, int] = {}
        for decoded in batches:
            for tp, (first, _) in decoded.spans.items():
                firsts[tp] = min(first, firsts.get(tp, first))
        for tp, first in firsts.items():
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, first)
                self._read_next[tp] = first

    def _contiguous(self, batch: dict) -> dict:
        """Only records that continue from where reading left off, on partitions whose assignment is done.

        aiokafka may hand out records fetched from the reset position while the assignment listener is
        still reading the stored offsets; those (and anything before the stored position) are skipped.
        """
        kept = {}
        for tp, records in batch.items():
            if tp not in self._read_next or not records:
                continue  # assignment not finished (or revoked): the listener seeks
            expected = self._read_next[tp]
            if expected is not None and records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
            if records:
                kept[tp] = records
                self._read_next[tp] = records[-1].offset + 1
        return kept

    def _decode(self, batch: dict) -> "_Decoded":
        decoded = _Decoded()
        seen: set[str] = set()
        self.reader.begin_batch()
        read = self.reader.read
        rows, dead, raw = decoded.rows, decoded.dead, decoded.raw
        for tp, records in batch.items():
            topic, partition = tp.topic, tp.partition
            for record in records:
                outcome = read(topic, partition, record.offset, record.key, record.value)
                if isinstance(outcome, DeadLetter):
                    dead.append(outcome)
                    continue
                event_id, row = outcome
                if row is None:
                    continue
                if event_id in seen:
                    decoded.duplicates += 1
                    continue
                seen.add(event_id)
                rows.append(row)
                raw[(topic, partition, record.offset)] = (record.key, record.value)
            decoded.messages += len(records)
            decoded.spans[tp] = (records[0].offset, records[-1].offset)
        outliers = batch_outliers(rows, self.settings.max_batch_spread_s)
        if outliers:  # far from the rest of the batch: implausible (and every day between would need sessions)
            dead += [self._dead_row(decoded, rows[i], reason) for i, reason in outliers.items()]
            decoded.rows = [row for i, row in enumerate(rows) if i not in outliers]
        return decoded

    @staticmethod
    def _dead_row(decoded: "_Decoded", row: tuple, reason: str) -> DeadLetter:
        topic, partition, offset = row[-3:]
        key, value = decoded.raw[(topic, partition, offset)]
        return DeadLetter(topic, partition, offset, key, value, clean_reason(f"{topic}: {reason}"))

    async def _store(self, decoded: "_Decoded") -> "_Decoded":
        """Dead letters out, then the batch and its offsets in one transaction; a batch PostgreSQL refuses
        for a message's data is bisected (:meth:`_isolate`). Never raises: any other failure (the database
        or the broker away) is kept on the batch (the caller rewinds and retries)."""
        try:
            if decoded.dead:
                await self._send_dead_letters(decoded.dead)
            conn = await self._connection()
            started = time.perf_counter()
            try:
                result = await store.write_batch(conn, self.settings.group_id, decoded.rows, self._offsets(decoded),
                                                 _dead_counts(decoded.dead), self.timetable)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if not decoded.rows or not content_error(exc):
                    raise
                result = await self._isolate(conn, decoded, exc)
        except Exception as exc:  # noqa: BLE001 - the database or the broker away (or failing): pause, retry
            if not isinstance(exc, _db_errors() + (_BrokerAway,)):
                log.error("batch not written, unexpected %s (retrying as for an outage)", _one_line(exc),
                          exc_info=exc)
            decoded.error = exc
            return decoded
        group = self.settings.group_id
        BATCH_SECONDS.labels(group).observe(time.perf_counter() - started)
        duplicates = decoded.duplicates + result.events - result.new
        self.stats.batches += 1
        self.stats.messages += decoded.messages
        self.stats.events += result.new
        self.stats.duplicates += duplicates
        self.stats.dead_letters += len(decoded.dead)
        self.stats.attendance_changes += result.changed
        MESSAGES.labels(group).inc(decoded.messages)
        EVENT_OUTCOMES.labels(group, "stored").inc(result.new)
        EVENT_OUTCOMES.labels(group, "duplicate").inc(duplicates)
        EVENT_OUTCOMES.labels(group, "dead_letter").inc(len(decoded.dead))
        ATTENDANCE_CHANGES.labels(group).inc(result.changed)
        return decoded

    @staticmethod
    def _offsets(decoded: "_Decoded") -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): last + 1 for tp, (_, last) in decoded.spans.items()}

    async def _isolate(self, conn, decoded: "_Decoded", error: BaseException) -> store.BatchResult:
        """PostgreSQL refused the batch for its data: write it in halves (recursively; each part in its own
        transaction, in offset order) down to the single messages it refuses, dead-letter those, then store
        the offsets. A crash in between is harmless: what was written is de-duplicated when read again."""
        group, total, refused = self.settings.group_id, store.BatchResult(), []
        log.warning("PostgreSQL refused a batch of %d events for their data (%s): isolating the event(s) at fault",
                    len(decoded.rows), _one_line(error))

        async def write(rows: list[tuple], exc: BaseException) -> None:
            if len(rows) == 1:
                refused.append((rows[0], exc))
                return
            for part in (rows[: len(rows) // 2], rows[len(rows) // 2:]):
                try:
                    _add(total, await store.write_batch(conn, group, part, {}, {}, self.timetable))
                except Exception as part_exc:  # noqa: BLE001 - sorted here
                    if not content_error(part_exc):
                        raise
                    await write(part, part_exc)

        await write(decoded.rows, error)
        letters = [self._dead_row(decoded, row, f"refused by PostgreSQL: {_one_line(exc)}") for row, exc in refused]
        await self._send_dead_letters(letters)
        decoded.dead += letters
        bad = {id(row) for row, _ in refused}
        decoded.rows = [row for row in decoded.rows if id(row) not in bad]
        _add(total, await store.write_batch(conn, group, [], self._offsets(decoded), _dead_counts(decoded.dead),
                                            self.timetable))
        self.stats.bisected += 1
        ISOLATED.labels(group).inc()
        return total

    async def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        """Send every dead letter; one the broker refuses as too large goes again without the message."""
        from aiokafka.errors import MessageSizeTooLargeError

        topic = self.config.kafka.topics.dead_letter.name
        limit = self.settings.dead_letter_max_value_bytes
        try:
            sent = []
            for letter in dead:
                event = dead_letter_event(letter, self.settings.group_id, max_value_bytes=limit)
                try:
                    future = await self._producer.send(topic, key=letter.topic.encode(), value=encode(event))
                except MessageSizeTooLargeError as exc:
                    event = _without_payload(event, exc)
                    future = await self._producer.send(topic, key=letter.topic.encode(), value=encode(event))
                sent.append((letter, event, future))
            results = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
            for (letter, event, _), result in zip(sent, results):
                if isinstance(result, MessageSizeTooLargeError):  # the broker's own limit is lower
                    await (await self._producer.send(topic, key=letter.topic.encode(),
                                                     value=encode(_without_payload(event, result))))
                elif isinstance(result, BaseException):
                    raise result
        except Exception as exc:
            raise _BrokerAway(f"dead-letter topic {topic}: {_one_line(exc)}") from None
        for letter in dead:
            log.warning("dead letter %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason)

    async def _seek_to_stored(self, assigned) -> None:
        """On assignment: continue from the offsets stored with the results (retrying while PostgreSQL is away)."""
        import asyncpg

        if not assigned:
            return
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.database_url, timeout=10)
                try:
                    offsets = await store.stored_offsets(conn, self.settings.group_id,
                                                         [(tp.topic, tp.partition) for tp in assigned])
                finally:
                    await conn.close()
                break
            except _db_errors() as exc:
                log.warning("cannot read stored offsets (%s); retrying in %.1f s", _one_line(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for tp in assigned:
            stored = offsets.get((tp.topic, tp.partition))
            if stored is not None:
                self._consumer.seek(tp, stored)
            else:  # records fetched before this point were skipped (see _contiguous): read from the start
                await self._consumer.seek_to_beginning(tp)
            self._next[tp] = stored
            self._read_next[tp] = stored
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{offsets.get((tp.topic, tp.partition), 'start')}"
                                          for tp in sorted(assigned)))

    # --------------------------------------------------------------------------------- housekeeping
    async def _housekeeping(self) -> None:
        """The outbox publisher, sessions closed by the clock, and (optionally) the retention purge."""
        import asyncpg

        conn = None
        delay = 0.5
        next_tick = 0.0
        next_purge = time.monotonic() + self.settings.purge_interval_s
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.database_url, timeout=10)
                if time.monotonic() >= next_tick:
                    closed = await close_due_sessions(conn, grace_s=self.settings.close_grace_s)
                    if closed:
                        log.info("closed by the clock: sessions %s", ", ".join(map(str, closed)))
                    next_tick = time.monotonic() + 5.0
                if self.settings.purge_interval_s and time.monotonic() >= next_purge:

                    log.info("retention purge: %s", await purge(conn, self.config, dry_run=False))
                    next_purge = time.monotonic() + self.settings.purge_interval_s
                while await self._publish_outbox(conn):
                    pass
                delay = 0.5
                self._outbox_wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._outbox_wakeup.wait()
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
                raise
            except Exception as exc:  # noqa: BLE001 - the clock must not stop: anything else is logged in full
                if isinstance(exc, _db_errors() + (_BrokerAway,)):
                    log.warning("housekeeping paused (%s); retrying in %.1f s", _one_line(exc), delay)
                else:
                    log.error("housekeeping failed, unexpected %s (retrying in %.1f s)", _one_line(exc), delay,
                              exc_info=exc)
                self.stats.housekeeping_errors += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
                conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _publish_outbox(self, conn, limit: int = 1000) -> int:
        """Send up to ``limit`` outbox rows in order and delete them once acknowledged; how many."""
        topic = self.config.kafka.topics.attendance.name
        async with conn.transaction():
            rows = await conn.fetch(
                """SELECT id, event_id, session_id, payload FROM attendance_outbox ORDER BY id
                   LIMIT $1 FOR UPDATE SKIP LOCKED""", limit)
            if not rows:
                return 0
            try:
                futures = []
                for row in rows:
                    event = attendance_event(row["event_id"], json.loads(row["payload"]))
                    event["published_at"] = now_timestamp()
                    futures.append(await self._producer.send(topic, key=str(row["session_id"]).encode(),
                                                             value=encode(event)))
                await asyncio.gather(*futures)
            except Exception as exc:
                if isinstance(exc, _db_errors()):
                    raise
                raise _BrokerAway(f"attendance topic {topic}: {exc}") from None
            await conn.execute("DELETE FROM attendance_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.stats.published += len(rows)
        ATTENDANCE_PUBLISHED.labels(self.settings.group_id).inc(len(rows))
        return len(rows)

    # ----------------------------------------------------------------------------------- lost logs
    async def _check_log_ends(self) -> None:
        """A partition whose log (as the last fetch saw it) ends before the offset stored for it lost its
        log: every new event would be skipped up to the stored offset. Record it, say it, read it again
        from its beginning. While PostgreSQL is away this waits for the next round."""
        consumer = self._consumer
        for tp in list(consumer.assignment()):
            stored, end = self._next.get(tp), consumer.highwater(tp)
            if stored is None or end is None or end >= stored:
                continue
            LAG.labels(self.settings.group_id, tp.topic, str(tp.partition)).set(end - stored)  # negative: say it
            try:
                await store.forget_offset(await self._connection(), self.settings.group_id, tp.topic, tp.partition,
                                          stored, end)
            except _db_errors() as exc:
                log.warning("cannot record the lost log of %s[%d] (%s); trying again", tp.topic, tp.partition,
                            _one_line(exc))
                await self._drop_connection()
                return
            log.error("the broker's log of %s[%d] ends at offset %d, but %d messages of it are stored: the log was "
                      "lost (a broker without persistence restarted, or the topic was deleted and made again); "
                      "reading the partition again from its beginning (recorded in audit_log as writer.log_lost)",
                      tp.topic, tp.partition, end, stored)
            LOG_RESETS.labels(self.settings.group_id, tp.topic, str(tp.partition)).inc()
            self.stats.log_resets += 1
            self.log_resets.append({"topic": tp.topic, "partition": tp.partition, "stored_next_offset": stored,
                                    "log_end": end, "at": dt.datetime.now(dt.timezone.utc).isoformat()})
            await consumer.seek_to_beginning(tp)
            self._next[tp] = None
            self._read_next[tp] = None

    def health(self) -> dict[str, Any]:
        """How the writer is: 'ok', 'paused' (the last batch was not written: database or broker away) or
        'log_lost' (a partition's log was lost since it started: see log_resets)."""
        state = "paused" if self._paused else "log_lost" if self.log_resets else "ok"
        return {"state": state, "paused_by": self._paused, "log_resets": list(self.log_resets),
                "since_progress_s": round(time.monotonic() - self._last_progress, 1),
                "dead_letters": self.stats.dead_letters, "batches_bisected": self.stats.bisected}

    # ----------------------------------------------------------------------------------- observers
    def _observe_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            end, stored = consumer.highwater(tp), self._next.get(tp)
            if end is not None:  # nothing stored yet: all of it (from the start) is to come. Not clamped:
                # a negative lag is a log that ends before what is stored (see _check_log_ends)
                LAG.labels(self.settings.group_id, tp.topic, str(tp.partition)).set(end - (stored or 0))

    async def caught_up(self) -> bool:
        """True when every assigned partition is stored up to its end and the outbox is empty. The end is
        the high watermark of the last fetch response (Tansu's ListOffsets answers the base offset of the
        last batch + 1, not the end)."""
        import asyncpg

        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return False
        assigned = list(consumer.assignment())
        ends = {tp: consumer.highwater(tp) for tp in assigned}
        if any(end is None for end in ends.values()):
            return False
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            stored = await store.stored_offsets(conn, self.settings.group_id, [(tp.topic, tp.partition) for tp in assigned])
            pending = await conn.fetchval("SELECT count(*) FROM attendance_outbox")
        finally:
            await conn.close()
        # == not >=: stored past the log's end is a lost log (see _check_log_ends), not caught up
        return pending == 0 and all(stored.get((tp.topic, tp.partition), 0) == ends[tp] for tp in assigned)


class _BrokerAway(Exception):
    pass


@dataclass
class _Decoded:
    """A batch decoded: staging rows (de-duplicated, offset order), dead letters, per partition the span."""

    rows: list[tuple] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    raw: dict[tuple[str, int, int], tuple[bytes | None, bytes | None]] = field(default_factory=dict)  # of rows
    spans: dict[Any, tuple[int, int]] = field(default_factory=dict)
    messages: int = 0
    duplicates: int = 0
    error: BaseException | None = None


class _Rebalance:
    """aiokafka rebalance listener: wait for the batch in flight before giving partitions up; seek to the
    stored offsets when given some."""

    def __new__(cls, writer: AttendanceWriter):
        from aiokafka.abc import ConsumerRebalanceListener

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                async with writer._batch_lock:
                    await writer._finish_inflight()  # a failed batch is read again by the next owner
                    for tp in revoked:
                        writer._next.pop(tp, None)
                        writer._read_next.pop(tp, None)

            async def on_partitions_assigned(self, assigned):
                await writer._seek_to_stored(assigned)

        return Listener()


def attendance_event(event_id: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """An attendance event (schemas/attendance.v1.json) from an outbox payload, validated."""
    return build_event("attendance", {**payload, "event_id": str(event_id)})


def dead_letter_event(letter: DeadLetter, group: str, *, max_value_bytes: int = 512 * 1024) -> dict[str, Any]:
    """A dead_letter event for a message; its event_id is derived from the message's position, so sending
    it again after a crash gives the same id. A value over ``max_value_bytes`` (a key over 4 KiB) is cut
    to its first bytes, with ``truncated`` true and the original sizes."""
    key, value = letter.key, letter.value
    truncated = (key is not None and len(key) > _DEAD_LETTER_KEY_BYTES) or (
        value is not None and len(value) > max_value_bytes)
    event = build_event("dead_letter", {
        "event_id": str(uuid.uuid5(_DEAD_LETTER_NS, f"{letter.topic}:{letter.partition}:{letter.offset}")),
        "source_topic": letter.topic, "source_partition": letter.partition, "source_offset": letter.offset,
        "key_base64": base64.b64encode(key[:_DEAD_LETTER_KEY_BYTES]).decode() if key is not None else None,
        "value_base64": base64.b64encode(value[:max_value_bytes]).decode() if value is not None else None,
        "truncated": truncated, "key_bytes": len(key) if key is not None else None,
        "value_bytes": len(value) if value is not None else None,
        "reason": clean_reason(letter.reason), "consumer_group": group,
        "received_at": dt.datetime.now(dt.timezone.utc),
    })
    event["published_at"] = now_timestamp()
    return event


def _without_payload(event: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The dead letter without the message (the broker refused it as too large even cut)."""
    reason = clean_reason(f"{event['reason']} (message not kept: {_one_line(exc)})")
    return {**event, "key_base64": None, "value_base64": None, "truncated": True, "reason": reason}


def _dead_counts(dead: list[DeadLetter]) -> dict[str, tuple[int, str]]:
    """{topic: (dead letters, the last reason)} for consumer_dead_letter."""
    counts: dict[str, tuple[int, str]] = {}
    for letter in dead:
        counts[letter.topic] = (counts.get(letter.topic, (0, ""))[0] + 1, letter.reason[:500])
    return counts


def _add(total: store.BatchResult, part: store.BatchResult) -> None:
    total.events += part.events
    total.new += part.new
    total.pairs += part.pairs
    total.changed += part.changed


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
