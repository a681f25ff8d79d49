"""A batch of messages, from Kafka records to PostgreSQL: decoded into staging rows and dead letters
(:func:`decode_batch`), then written with the consumer's next offsets in one transaction
(:class:`BatchStore`). A batch PostgreSQL refuses for a message's data is bisected to find that message,
which is dead-lettered; the rest of the batch is stored."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import asyncpg

from consumers import store
from consumers.dead_letters import DeadLetterSender, dead_counts
from consumers.failures import DB_ERRORS, BrokerAway, content_error, one_line
from consumers.records import DeadLetter, MessageReader, batch_outliers, clean_reason
from consumers.writer_stats import ATTENDANCE_CHANGES, BATCH_SECONDS, EVENT_OUTCOMES, ISOLATED, MESSAGES, WriterStats
from infra.foundation.config import AttendanceWriterConfig

log = logging.getLogger("rollcall.writer")


@dataclass
class DecodedBatch:
    """A batch decoded: staging rows (de-duplicated, offset order), dead letters, per partition the span."""

    rows: list[tuple] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    sources: dict[tuple[str, int], Sequence[Any]] = field(default_factory=dict)  # the records, per partition
    spans: dict[Any, tuple[int, int]] = field(default_factory=dict)
    messages: int = 0
    duplicates: int = 0
    error: BaseException | None = None  # why it was not written (then nothing of it was committed)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """{(topic, partition): the offset after the batch's last message}: what is stored with its results."""
        return {(tp.topic, tp.partition): last + 1 for tp, (_, last) in self.spans.items()}

    def dead_row(self, row: tuple, reason: str) -> DeadLetter:
        """A dead letter for one of the batch's rows (the message as it came, from ``raw``)."""
        topic, partition, offset = row[-3:]
        record = _record_at(self.sources[(topic, partition)], offset)
        return DeadLetter(topic, partition, offset, record.key, record.value, clean_reason(f"{topic}: {reason}"))


def _record_at(records: Sequence[Any], offset: int) -> Any:
    """The record at ``offset`` of a partition's records (in offset order, as read)."""
    at = bisect.bisect_left(records, offset, key=operator.attrgetter("offset"))
    if at < len(records) and records[at].offset == offset:
        return records[at]
    return next(record for record in records if record.offset == offset)  # not in order: look at each


def decode_batch(reader: MessageReader, batch: dict, max_spread_s: float) -> DecodedBatch:
    """Decode ``batch`` ({TopicPartition: records}): rows de-duplicated on event_id, the messages that
    cannot be used (and those far from the rest of its batch) as dead letters."""
    decoding = _Decoding(reader, batch, max_spread_s)
    for _ in decoding:
        pass
    return decoding.decoded


async def decode_batch_yielding(reader: MessageReader, batch: dict, max_spread_s: float) -> DecodedBatch:
    """:func:`decode_batch`, letting the event loop run every few hundred messages: the batch being
    written meanwhile moves on to its next statement as soon as PostgreSQL answered the last one (without
    this it would wait for the whole decode, and PostgreSQL would sit idle)."""
    decoding = _Decoding(reader, batch, max_spread_s)
    for _ in decoding:
        await asyncio.sleep(0)
    return decoding.decoded


class _Decoding:
    """Iterating decodes the batch into ``decoded``, pausing (yielding None) every ``every`` messages."""

    def __init__(self, reader: MessageReader, batch: dict, max_spread_s: float, every: int = 250):
        self.reader, self.batch, self.max_spread_s, self.every = reader, batch, max_spread_s, every
        self.decoded = DecodedBatch()

    def __iter__(self):
        decoded, every = self.decoded, self.every
        seen: set[str] = set()
        self.reader.begin_batch()
        read = self.reader.read
        rows, dead = decoded.rows, decoded.dead
        countdown = every
        for tp, records in self.batch.items():
            topic, partition = tp.topic, tp.partition
            for record in records:
                countdown -= 1
                if not countdown:
                    countdown = every
                    yield None
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
            decoded.sources[(topic, partition)] = records  # a dead row's message is looked up there (rarely)
            decoded.messages += len(records)
            decoded.spans[tp] = (records[0].offset, records[-1].offset)
        outliers = batch_outliers(rows, self.max_spread_s)
        if outliers:  # far from the rest of the batch: implausible (and every day between would need sessions)
            dead += [decoded.dead_row(rows[i], reason) for i, reason in outliers.items()]
            decoded.rows = [row for i, row in enumerate(rows) if i not in outliers]


class BatchStore:
    """Writes decoded batches on the writer's PostgreSQL connection (made again after a failure)."""

    def __init__(self, settings: AttendanceWriterConfig, *, database_url: str, dead_letters: DeadLetterSender,
                 stats: WriterStats, timetable: store.TimetableCache):
        self.settings = settings
        self.group = settings.group_id
        self.database_url = database_url
        self.dead_letters = dead_letters
        self.stats = stats
        self.timetable = timetable
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.database_url, timeout=10)
            await store.prepare(self._conn)
        return self._conn

    def drop_connection(self) -> None:
        """Forget the connection (after a failure: its state is unknown); the next batch makes a new one."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
        self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def store(self, decoded: DecodedBatch) -> DecodedBatch:
        """Dead letters out, then the batch and its offsets in one transaction; a batch PostgreSQL refuses
        for a message's data is bisected (:meth:`_isolate`). Never raises: any other failure (the database
        or the broker away) is kept on the batch (the caller rewinds and retries)."""
        try:
            if decoded.dead:
                await self.dead_letters.send(decoded.dead)
            conn = await self.connection()
            started = time.perf_counter()
            try:
                result = await store.write_batch(conn, self.group, decoded.rows, decoded.next_offsets(),
                                                 dead_counts(decoded.dead), self.timetable)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if not decoded.rows or not content_error(exc):
                    raise
                result = await self._isolate(conn, decoded, exc)
        except Exception as exc:  # noqa: BLE001 - the database or the broker away (or failing): pause, retry
            if not isinstance(exc, DB_ERRORS + (BrokerAway,)):
                log.error("batch not written, unexpected %s (retrying as for an outage)", one_line(exc),
                          exc_info=exc)
            decoded.error = exc
            return decoded
        BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)
        self._count(decoded, result)
        return decoded

    def _count(self, decoded: DecodedBatch, result: store.BatchResult) -> None:
        """A stored batch in the stats and the metrics."""
        group, stats = self.group, self.stats
        duplicates = decoded.duplicates + result.events - result.new
        stats.batches += 1
        stats.messages += decoded.messages
        stats.events += result.new
        stats.duplicates += duplicates
        stats.dead_letters += len(decoded.dead)
        stats.attendance_changes += result.changed
        MESSAGES.labels(group).inc(decoded.messages)
        EVENT_OUTCOMES.labels(group, "stored").inc(result.new)
        EVENT_OUTCOMES.labels(group, "duplicate").inc(duplicates)
        EVENT_OUTCOMES.labels(group, "dead_letter").inc(len(decoded.dead))
        ATTENDANCE_CHANGES.labels(group).inc(result.changed)

    async def _isolate(self, conn: asyncpg.Connection, decoded: DecodedBatch,
                       error: BaseException) -> store.BatchResult:
        """PostgreSQL refused the batch for its data: write it in halves (recursively; each part in its own
        transaction, in offset order) down to the single messages it refuses, dead-letter those, then store
        the offsets. A crash in between is harmless: what was written is de-duplicated when read again."""
        log.warning("PostgreSQL refused a batch of %d events for their data (%s): isolating the event(s) at fault",
                    len(decoded.rows), one_line(error))
        total, refused = store.BatchResult(), []
        await self._write_halves(conn, decoded.rows, error, total, refused)
        letters = [decoded.dead_row(row, f"refused by PostgreSQL: {one_line(exc)}") for row, exc in refused]
        await self.dead_letters.send(letters)
        decoded.dead += letters
        bad = {id(row) for row, _ in refused}
        decoded.rows = [row for row in decoded.rows if id(row) not in bad]
        _add(total, await store.write_batch(conn, self.group, [], decoded.next_offsets(), dead_counts(decoded.dead),
                                            self.timetable))
        self.stats.bisected += 1
        ISOLATED.labels(self.group).inc()
        return total

    async def _write_halves(self, conn: asyncpg.Connection, rows: list[tuple], exc: BaseException,
                            total: store.BatchResult, refused: list[tuple[tuple, BaseException]]) -> None:
        """Write ``rows`` (refused with ``exc``) in two halves, each half refused for its data again in
        halves; what was written is added to ``total``, a single row refused goes to ``refused``."""
        if len(rows) == 1:
            refused.append((rows[0], exc))
            return
        for part in (rows[: len(rows) // 2], rows[len(rows) // 2:]):
            try:
                _add(total, await store.write_batch(conn, self.group, part, {}, {}, self.timetable))
            except Exception as part_exc:  # noqa: BLE001 - sorted here
                if not content_error(part_exc):
                    raise
                await self._write_halves(conn, part, part_exc, total, refused)


def _add(total: store.BatchResult, part: store.BatchResult) -> None:
    total.events += part.events
    total.new += part.new
    total.pairs += part.pairs
    total.changed += part.changed
