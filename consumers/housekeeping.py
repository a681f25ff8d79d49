"""The writer's housekeeping, beside its batches: the outbox publisher (attendance changes, written in the
batch's transaction to ``attendance_outbox``, sent to the attendance topic and deleted once the broker
acknowledged them; several writers share the outbox with ``FOR UPDATE SKIP LOCKED``), sessions closed by
the clock, (optionally) the retention purge, and (optionally) the scheduled e-mail reports
(:mod:`consumers.reports`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from tenacity import AttemptManager, RetryCallState

from consumers.failures import DB_ERRORS, BrokerAway, one_line
from consumers.privacy import purge
from consumers.reports import report_loop
from consumers.sessions import close_due_sessions
from consumers.writer_stats import ATTENDANCE_PUBLISHED, WriterStats
from infra.foundation.config import Config
from infra.foundation.retry import connected, reconnecting
from schemas.events import build_event, encode, now_timestamp

log = logging.getLogger("rollcall.writer")

_CLOCK_EVERY_S = 5.0  # how often sessions due to close are looked for
_OUTBOX_WAIT_S = 1.0  # the outbox is also read this often without a stored batch waking it


def attendance_event(event_id: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """An attendance event (schemas/attendance.v1.json) from an outbox payload, validated."""
    return build_event("attendance", {**payload, "event_id": str(event_id)})


class Housekeeper:
    """Runs the housekeeping rounds on a connection of its own until ``stop`` is set; a failed round
    (PostgreSQL or the broker away, or anything else: the clock must not stop) is counted, logged and
    retried with backoff on a new connection."""

    def __init__(self, config: Config, *, database_url: str, producer: AIOKafkaProducer, stats: WriterStats,
                 stop: asyncio.Event, wakeup: asyncio.Event):
        self.config = config
        self.settings = config.attendance
        self.database_url = database_url
        self.producer = producer
        self.stats = stats
        self.stop = stop
        self.wakeup = wakeup  # set when a batch was stored: its attendance changes are in the outbox
        self._conn: asyncpg.Connection | None = None
        self._next_tick = 0.0
        self._next_purge = time.monotonic() + self.settings.purge_interval_s

    async def run(self) -> None:
        """The outbox publisher, sessions closed by the clock, (optionally) the retention purge, and the
        e-mail reports when ``[reports] enabled`` (a task of their own: a slow mail server never holds up
        the outbox)."""
        reports = (asyncio.create_task(report_loop(self.config, self.database_url, self.stop), name="writer-reports")
                   if self.config.reports.enabled else None)
        try:
            async for attempt in reconnecting(what="housekeeping", errors=(Exception,), first_s=0.5, max_s=10.0,
                                              on_retry=self._paused):
                with attempt:
                    try:
                        await self._rounds(attempt)
                    except BaseException:  # cancelled included: the connection goes with the round
                        self._drop_connection()
                        raise
        finally:
            if reports is not None:
                reports.cancel()
                await asyncio.gather(reports, return_exceptions=True)

    async def _rounds(self, attempt: AttemptManager) -> None:
        while not self.stop.is_set():
            await self._round()
            connected(attempt)
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(_OUTBOX_WAIT_S):
                    await self.wakeup.wait()

    async def _round(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.database_url, timeout=10)
        conn = self._conn
        if time.monotonic() >= self._next_tick:
            closed = await close_due_sessions(conn, grace_s=self.settings.close_grace_s)
            if closed:
                log.info("closed by the clock: sessions %s", ", ".join(map(str, closed)))
            self._next_tick = time.monotonic() + _CLOCK_EVERY_S
        if self.settings.purge_interval_s and time.monotonic() >= self._next_purge:
            log.info("retention purge: %s", await purge(conn, self.config, dry_run=False))
            self._next_purge = time.monotonic() + self.settings.purge_interval_s
        while await self.publish_outbox(conn):
            pass

    def _paused(self, state: RetryCallState) -> None:
        exc, delay = state.outcome.exception(), state.next_action.sleep
        if isinstance(exc, DB_ERRORS + (BrokerAway,)):
            log.warning("housekeeping paused (%s); retrying in %.1f s", one_line(exc), delay)
        else:
            log.error("housekeeping failed, unexpected %s (retrying in %.1f s)", one_line(exc), delay, exc_info=exc)
        self.stats.housekeeping_errors += 1

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
        self._conn = None

    async def publish_outbox(self, conn: asyncpg.Connection, limit: int = 1000) -> int:
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
                    futures.append(await self.producer.send(topic, key=str(row["session_id"]).encode(),
                                                            value=encode(event)))
                await asyncio.gather(*futures)
            except Exception as exc:
                if isinstance(exc, DB_ERRORS):
                    raise
                raise BrokerAway(f"attendance topic {topic}: {exc}") from None
            await conn.execute("DELETE FROM attendance_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.stats.published += len(rows)
        ATTENDANCE_PUBLISHED.labels(self.settings.group_id).inc(len(rows))
        return len(rows)
