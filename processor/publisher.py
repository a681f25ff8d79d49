"""The event publisher: a bounded outgoing buffer in front of an aiokafka producer.

``publish(topic, key, event)`` never waits for the broker: it validates the event, appends it to a
bounded buffer and returns True; when the buffer is full the event is dropped, counted and logged (at
most one line every ``drop_log_interval_s``) and it returns False. So a broker that is slow, away or
never there costs the stages nothing but the events that do not fit.

A background task connects (``start()`` returns at once; a broker that cannot be reached is retried
with exponential backoff and one log line per attempt) and sends the buffer in order, in batches:
every event is produced with its key (the same key goes to the same partition, in order), stamped with
``published_at`` at send time, and leaves the buffer only when the broker acknowledged it. Events whose
send failed for a retriable reason (broker away, leader moving, timeout) go back to the front of the
buffer, in their order, and are sent again after a backoff: delivery is at least once, and consumers
de-duplicate on ``event_id``. Per-key order holds, with one exception: a batch that fails half-way with a
later event of a key acknowledged and an earlier one of the same key not (rare: a partition's events
of one batch travel in one request and fail together). An event the broker refuses for good (too
large, not authorised) is dropped with an error line, so it cannot hold up the rest.

``stop(flush_timeout_s)`` sends what it can in that time; what is left is counted as lost and logged.

Validating costs about 0.25 ms an event (jsonschema); ``validate=False`` skips it where every event
comes from the builders of :mod:`processor.events`, which validate already.

Thread safety: ``publish`` may be called from any thread (the sender runs on the loop ``start`` ran on).

Metrics (prometheus_client default registry, registered once per process):
``rollcall_events_published_total{topic}``, ``rollcall_events_dropped_total{topic}``,
``rollcall_publisher_buffer_depth`` (all publishers of the process), ``rollcall_publisher_send_errors_total``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from processor import events

log = logging.getLogger("rollcall.publisher")

_PUBLISHED_AT = "published_at"


# --------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class _Metrics:
    published: Any
    dropped: Any
    buffer_depth: Any
    send_errors: Any


def _metric(kind, name: str, documentation: str, labels: tuple[str, ...] = ()):
    """The collector ``name`` of the default registry: made here once, or the one already registered
    (a second import of this module, or another module that made it first)."""
    from prometheus_client import REGISTRY

    try:
        return kind(name, documentation, labels)
    except ValueError:  # "Duplicated timeseries in CollectorRegistry"
        existing = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(
            name.removesuffix("_total"))
        if existing is None:
            raise
        return existing


@functools.cache
def metrics() -> _Metrics:
    from prometheus_client import Counter, Gauge

    return _Metrics(
        published=_metric(Counter, "rollcall_events_published_total",
                          "Events the broker acknowledged, by topic", ("topic",)),
        dropped=_metric(Counter, "rollcall_events_dropped_total",
                        "Events that never reached the broker (buffer full, refused, unsent at stop), by topic",
                        ("topic",)),
        buffer_depth=_metric(Gauge, "rollcall_publisher_buffer_depth",
                             "Events waiting in the publishers' outgoing buffers (in flight included)"),
        send_errors=_metric(Counter, "rollcall_publisher_send_errors_total",
                            "Failed connection attempts and failed sends of the event publishers"),
    )


# ------------------------------------------------------------------------------------- publisher
@dataclass(slots=True)
class _Pending:
    topic: str
    key: bytes
    event: dict[str, Any]


_ids = itertools.count(1)


class EventPublisher:
    """Publishes events to Kafka through a bounded buffer; see the module's description.

    ``bootstrap_servers`` is ``host:port[,host:port...]`` (the embedded stack's is
    ``StackState.kafka_bootstrap_servers``). ``enable_idempotence`` works with a real Kafka cluster only
    (the bundled Tansu broker rejects it). ``validate``: check each event against its schema in
    ``publish`` (an invalid event raises :class:`processor.events.InvalidEvent`: a bug of the caller).
    ``producer_options``: more ``AIOKafkaProducer`` keyword arguments (SASL/SSL settings, ...).
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str = "rollcall", max_buffer: int = 10000,
                 enable_idempotence: bool = False, security_protocol: str = "PLAINTEXT", linger_ms: int = 5,
                 acks: int | str = "all", max_batch: int = 1000, request_timeout_ms: int = 10000,
                 retry_backoff_s: float = 0.5, max_retry_backoff_s: float = 30.0, validate: bool = True,
                 drop_log_interval_s: float = 10.0, producer_options: Mapping[str, Any] | None = None):
        servers = [s.strip() for s in str(bootstrap_servers).split(",") if s.strip()]
        if not servers or any(":" not in s for s in servers):
            raise ValueError(f"bootstrap_servers {bootstrap_servers!r}: give host:port[,host:port...] "
                             "('embedded' is resolved to the embedded stack's address before this point)")
        if max_buffer < 1 or max_batch < 1:
            raise ValueError("max_buffer and max_batch must be at least 1")
        self.bootstrap_servers = ",".join(servers)
        self.client_id = client_id
        self.max_buffer = max_buffer
        self.max_batch = max_batch
        self.validate = validate
        # max_batch_size 64 KiB (aiokafka: 16 KiB) doubles the throughput to the local broker: one
        # request per partition is in flight at a time, so small batches make many round trips.
        self._producer_kwargs = {
            "bootstrap_servers": self.bootstrap_servers, "client_id": client_id,
            "enable_idempotence": enable_idempotence, "security_protocol": security_protocol,
            "linger_ms": linger_ms, "acks": acks, "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": 100, "max_batch_size": 65536, **dict(producer_options or {})}
        self._backoff = (max(0.01, retry_backoff_s), max(retry_backoff_s, max_retry_backoff_s))
        self._drop_log_interval_s = drop_log_interval_s
        self._name = f"{client_id}#{next(_ids)}"

        self._buffer: deque[_Pending] = deque()
        self._lock = threading.Lock()  # guards _buffer and the counters publish changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._producer = None
        self._stopping = False
        self._stopped = False
        self._in_flight = 0

        self._published: dict[str, int] = {}
        self._dropped: dict[str, int] = {}  # buffer full
        self._rejected: dict[str, int] = {}  # refused by the broker for good, or not encodable
        self._lost_at_stop = 0
        self._send_errors = 0
        self._connect_failures = 0
        self._drops_unlogged = 0
        self._last_drop_log = float("-inf")
        self._metrics = metrics()
        self._depth = self._metrics.buffer_depth

    # --------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the background sender; returns at once, whether or not the broker can be reached."""
        if self._task is not None:
            return
        if self._stopped:
            raise RuntimeError("this EventPublisher was stopped; make a new one")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        if self._buffer:
            self._wakeup.set()
        self._task = asyncio.create_task(self._run(), name=f"event-publisher {self._name}")

    async def stop(self, flush_timeout_s: float = 5.0) -> int:
        """Send what can be sent within ``flush_timeout_s``, then close; returns how many events were
        left unsent (lost: counted as dropped and logged)."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._wake()
            done, _ = await asyncio.wait({self._task}, timeout=max(0.0, flush_timeout_s))
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        elif self._task is not None and self._task.done() and not self._task.cancelled() and self._task.exception():
            log.error("event publisher %s: the sender had failed: %r", self._name, self._task.exception())
        await self._close_producer(timeout_s=max(1.0, min(5.0, flush_timeout_s)))
        self._log_drops(force=True)
        with self._lock:
            left = list(self._buffer)
            self._buffer.clear()
            self._in_flight = 0
        if left:
            self._depth.dec(len(left))
            self._lost_at_stop += len(left)
            for pending in left:
                self._metrics.dropped.labels(pending.topic).inc()
            log.warning("event publisher %s: stopped with %d event(s) unsent to %s (lost): the broker did not "
                        "take them within %.1f s", self._name, len(left), self.bootstrap_servers, flush_timeout_s)
        self._stopped = True
        return len(left)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every buffered event was acknowledged (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._buffer:
            if time.monotonic() >= deadline or self._task is None or self._task.done():
                return not self._buffer
            await asyncio.sleep(0.005)
        return True

    @property
    def connected(self) -> bool:
        return self._producer is not None

    # ----------------------------------------------------------------------------------- publish
    def publish(self, topic: str, key: str, event: dict[str, Any], *, best_effort: bool = False) -> bool:
        """Queue ``event`` for ``topic`` under ``key``; never waits for the broker.

        True: buffered (it is sent as soon as the broker takes it). False: the buffer is full
        (``max_buffer`` events wait) or ``stop()`` was called; the event was dropped and counted. Raises
        :class:`processor.events.InvalidEvent` for an event that does not match its schema (with
        ``validate``). ``best_effort`` events (live overlays, worthless a second later) are taken only
        while the buffer is under a quarter full, so a broker outage never fills it with them at the
        expense of the events that matter.
        """
        limit = self.max_buffer // 4 if best_effort else self.max_buffer
        if self._stopping or len(self._buffer) >= limit:
            return self._drop(topic)  # the cheap way out first: a full buffer is no time to validate
        if self.validate:
            events.validate(event, unpublished=True)
        pending = _Pending(topic, key.encode("utf-8"), event)
        with self._lock:
            accepted = not self._stopping and len(self._buffer) < self.max_buffer
            if accepted:
                self._buffer.append(pending)
        if not accepted:
            return self._drop(topic)
        self._depth.inc()
        self._wake()
        return True

    def _drop(self, topic: str) -> bool:
        with self._lock:
            self._dropped[topic] = self._dropped.get(topic, 0) + 1
            self._drops_unlogged += 1
        self._metrics.dropped.labels(topic).inc()
        self._log_drops()
        return False

    def _wake(self) -> None:
        if self._wakeup is None or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._drops_unlogged or (not force and now - self._last_drop_log < self._drop_log_interval_s):
                return
            count, self._drops_unlogged, self._last_drop_log = self._drops_unlogged, 0, now
            waiting = len(self._buffer)
        log.warning("event publisher %s: outgoing buffer full (%d events waiting for the broker at %s): "
                    "dropped %d event(s)%s; is the broker reachable? (more drops are summed up every %.0f s)",
                    self._name, waiting, self.bootstrap_servers, count,
                    "" if force else " since the last report", self._drop_log_interval_s)

    # ------------------------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "bootstrap_servers": self.bootstrap_servers,
                "connected": self.connected,
                "buffered": len(self._buffer),  # waiting, in flight included
                "in_flight": self._in_flight,
                "max_buffer": self.max_buffer,
                "published": sum(self._published.values()),
                "dropped": sum(self._dropped.values()),  # buffer full
                "rejected": sum(self._rejected.values()),  # refused for good
                "lost_at_stop": self._lost_at_stop,
                "send_errors": self._send_errors,
                "connect_failures": self._connect_failures,
                "published_by_topic": dict(self._published),
                "dropped_by_topic": dict(self._dropped),
                "rejected_by_topic": dict(self._rejected),
            }

    # ----------------------------------------------------------------------------------- sender
    async def _run(self) -> None:
        backoff = self._backoff[0]
        failed_in_a_row = 0
        while True:
            if self._stopping and not self._buffer:
                return
            try:
                if self._producer is None:
                    if not await self._connect(backoff):
                        await self._pause(backoff)
                        backoff = min(backoff * 2, self._backoff[1])
                        continue
                    backoff = self._backoff[0]
                with self._lock:
                    batch = list(itertools.islice(self._buffer, self.max_batch))
                    self._in_flight = len(batch)
                if not batch:
                    self._wakeup.clear()
                    if not self._buffer and not self._stopping:
                        await self._wakeup.wait()
                    continue
                outcomes, error = await self._send(batch)
                retry = self._settle(batch, outcomes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop the sending for good
                log.exception("event publisher %s: unexpected error in the sender; retrying in %.1f s",
                              self._name, backoff)
                with self._lock:
                    self._in_flight = 0
                retry, error = True, exc
            if not retry:
                backoff, failed_in_a_row = self._backoff[0], 0
                continue
            self._send_errors += 1
            self._metrics.send_errors.inc()
            failed_in_a_row += 1
            log.warning("event publisher %s: sending to the Kafka broker at %s failed (%s); %d event(s) kept in "
                        "the buffer, retrying in %.1f s", self._name, self.bootstrap_servers,
                        _short(error), len(self._buffer), backoff)
            if failed_in_a_row >= 3:  # start over from the bootstrap servers (the cluster may have moved)
                await self._close_producer(timeout_s=2.0)
                failed_in_a_row = 0
            await self._pause(backoff)
            backoff = min(backoff * 2, self._backoff[1])

    async def _connect(self, backoff: float) -> bool:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self._producer_kwargs)
        try:
            await producer.start()
        except asyncio.CancelledError:
            await _quietly(producer.stop(), 1.0)
            raise
        except Exception as exc:
            await _quietly(producer.stop(), 1.0)
            self._connect_failures += 1
            self._send_errors += 1
            self._metrics.send_errors.inc()
            log.warning("event publisher %s: cannot reach the Kafka broker at %s (%s); %d event(s) buffered "
                        "(max %d), retrying in %.1f s: check that the broker runs (`rollcall status` for the "
                        "embedded one) or set KAFKA_BOOTSTRAP_SERVERS / [kafka] bootstrap_servers to it",
                        self._name, self.bootstrap_servers, _short(exc), len(self._buffer), self.max_buffer,
                        backoff)
            return False
        self._producer = producer
        log.info("event publisher %s: connected to the Kafka broker at %s (%d event(s) waiting)",
                 self._name, self.bootstrap_servers, len(self._buffer))
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` before the next attempt; cut short by stop() when nothing is left to send."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopping and not self._buffer:
                return
            await asyncio.sleep(min(remaining, 0.1))

    async def _send(self, batch: list[_Pending]) -> tuple[list[str], BaseException | None]:
        """Produce ``batch`` in order; per event "acked", "retry" or "rejected"."""
        producer = self._producer
        outcomes = ["retry"] * len(batch)
        futures: list[tuple[int, asyncio.Future]] = []
        error: BaseException | None = None
        published_at = events.now_timestamp()
        for index, pending in enumerate(batch):
            try:
                value = events.encode({**pending.event, _PUBLISHED_AT: published_at})
            except events.InvalidEvent as exc:
                outcomes[index] = "rejected"
                log.error("event publisher %s: dropped an event for %s: %s", self._name, pending.topic, exc)
                continue
            try:
                futures.append((index, await producer.send(pending.topic, value=value, key=pending.key)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the rest of the batch waits for the next attempt, in order
                if _retriable(exc):
                    error = exc
                    break
                outcomes[index] = "rejected"
                log.error("event publisher %s: the broker refused an event for %s for good (%s): dropped",
                          self._name, pending.topic, _short(exc))
        results = await asyncio.gather(*(future for _, future in futures), return_exceptions=True)
        for (index, _), result in zip(futures, results):
            if not isinstance(result, BaseException):
                outcomes[index] = "acked"
            elif _retriable(result):
                error = error or result
            else:
                outcomes[index] = "rejected"
                log.error("event publisher %s: the broker refused an event for %s for good (%s): dropped",
                          self._name, batch[index].topic, _short(result))
        return outcomes, error

    def _settle(self, batch: list[_Pending], outcomes: list[str]) -> bool:
        """Take the batch off the front of the buffer; put the ones to retry back there, in order."""
        retry = [pending for pending, outcome in zip(batch, outcomes) if outcome == "retry"]
        with self._lock:
            for _ in batch:
                self._buffer.popleft()
            self._buffer.extendleft(reversed(retry))
            self._in_flight = 0
            for pending, outcome in zip(batch, outcomes):
                if outcome == "acked":
                    self._published[pending.topic] = self._published.get(pending.topic, 0) + 1
                elif outcome == "rejected":
                    self._rejected[pending.topic] = self._rejected.get(pending.topic, 0) + 1
        gone = len(batch) - len(retry)
        if gone:
            self._depth.dec(gone)
        for pending, outcome in zip(batch, outcomes):
            if outcome == "acked":
                self._metrics.published.labels(pending.topic).inc()
            elif outcome == "rejected":
                self._metrics.dropped.labels(pending.topic).inc()
        return bool(retry)

    async def _close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly(producer.stop(), timeout_s)


def _retriable(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaTimeoutError

    # aiokafka marks a send that timed out (broker away) as not retriable; for us it is
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, (KafkaTimeoutError, ConnectionError,
                                                                      asyncio.TimeoutError, OSError))


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no reason given"
    name, text = type(exc).__name__, str(exc).strip()
    return text if text.startswith(name) else f"{name}: {text}" if text else name


async def _quietly(awaitable, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await awaitable
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # closing a producer whose broker is gone
        log.debug("event publisher: closing the producer: %r", exc)
