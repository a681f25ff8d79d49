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

Priorities: attendance evidence (recognition, presence: everything but best-effort traffic) comes first.
Best-effort events (``publish(..., best_effort=True)``, and every ``overlay`` and ``occupancy`` event:
live views, worthless once stale) wait in a queue of their own, capped at a quarter of ``max_buffer``
and sent after the evidence; when the buffer is full, an evidence event evicts the oldest best-effort
event not in flight rather than being dropped. What is dropped is counted by topic (metrics, ``stats()``)
and logged with the counts by topic (one line every ``drop_log_interval_s`` at most).

Validating costs about 0.25 ms an event (jsonschema); ``validate=False`` skips it where every event
comes from the builders of :mod:`schemas.events`, which validate already.

Thread safety: ``publish`` may be called from any thread (the sender runs on the loop ``start`` ran on).

Metrics (prometheus_client default registry, registered once per process):
``rollcall_events_published_total{topic}``, ``rollcall_events_dropped_total{topic}``,
``rollcall_publisher_buffer_depth`` (all publishers of the process), ``rollcall_publisher_send_errors_total``,
``rollcall_publisher_evicted_total{topic}`` (best-effort events evicted for evidence; also in dropped).
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

from infra.foundation.metrics import Counter, Gauge, get_or_create
from schemas import events

log = logging.getLogger("rollcall.publisher")

_PUBLISHED_AT = "published_at"
# Event types that are best-effort whoever publishes them: live views and statuses, worthless once stale
# (the next one says it again), never in the way of attendance evidence.
BEST_EFFORT_TYPES = frozenset({"overlay", "occupancy", "processor_status"})


# --------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class _Metrics:
    published: Any
    dropped: Any
    buffer_depth: Any
    send_errors: Any
    evicted: Any


@functools.cache
def metrics() -> _Metrics:
    return _Metrics(
        published=get_or_create(Counter, "rollcall_events_published_total",
                                "Events the broker acknowledged, by topic", labelnames=["topic"]),
        dropped=get_or_create(Counter, "rollcall_events_dropped_total",
                              "Events that never reached the broker (buffer full, refused, unsent at stop), by topic",
                              labelnames=["topic"]),
        buffer_depth=get_or_create(Gauge, "rollcall_publisher_buffer_depth",
                                   "Events waiting in the publishers' outgoing buffers (in flight included)"),
        send_errors=get_or_create(Counter, "rollcall_publisher_send_errors_total",
                                  "Failed connection attempts and failed sends of the event publishers"),
        evicted=get_or_create(Counter, "rollcall_publisher_evicted_total",
                              "Best-effort events evicted from a full buffer to keep attendance evidence, by topic",
                              labelnames=["topic"]),
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
    ``publish`` (an invalid event raises :class:`schemas.events.InvalidEvent`: a bug of the caller).
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

        self._buffer: deque[_Pending] = deque()  # attendance evidence (and anything not best-effort)
        self._spare: deque[_Pending] = deque()  # best-effort events, sent after the evidence
        self._lock = threading.Lock()  # guards the queues and the counters publish changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._producer = None
        self._stopping = False
        self._stopped = False
        self._in_flight = 0  # the first _in_flight of _buffer are being sent
        self._in_flight_spare = 0  # and the first _in_flight_spare of _spare

        self._published: dict[str, int] = {}
        self._dropped: dict[str, int] = {}  # buffer full (evicted included)
        self._evicted: dict[str, int] = {}  # best-effort events evicted for evidence
        self._drops_to_log: dict[str, int] = {}  # by topic, since the last drop line
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
        if self._waiting():
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
            left = list(self._buffer) + list(self._spare)
            self._buffer.clear()
            self._spare.clear()
            self._in_flight = self._in_flight_spare = 0
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
        while self._waiting():
            if time.monotonic() >= deadline or self._task is None or self._task.done():
                return not self._waiting()
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
        :class:`schemas.events.InvalidEvent` for an event that does not match its schema (with
        ``validate``). ``best_effort`` events (live overlays, worthless a second later; every overlay and
        occupancy event is) wait in their own queue of at most a quarter of ``max_buffer``; an event
        that is not best-effort finding the buffer full evicts the oldest best-effort one (see the
        module's description), so a broker outage never costs attendance evidence for live views.
        """
        best_effort = best_effort or event.get("event_type") in BEST_EFFORT_TYPES
        full = self._waiting() >= self.max_buffer
        if self._stopping or (best_effort and (full or len(self._spare) >= self.max_buffer // 4)) or (
                full and len(self._spare) <= self._in_flight_spare):
            return self._drop(topic)  # the cheap way out first: a full buffer is no time to validate
        if self.validate:
            events.validate(event, unpublished=True)
        pending = _Pending(topic, key.encode("utf-8"), event)
        evicted = None
        with self._lock:
            accepted = not self._stopping
            if accepted and self._waiting() >= self.max_buffer:  # only room by evicting a best-effort event
                accepted = not best_effort and len(self._spare) > self._in_flight_spare
                if accepted:
                    evicted = self._spare[self._in_flight_spare]
                    del self._spare[self._in_flight_spare]  # the oldest not being sent
            if accepted:
                (self._spare if best_effort else self._buffer).append(pending)
        if not accepted:
            return self._drop(topic)
        if evicted is not None:
            self._drop(evicted.topic, evicted=True)
        else:
            self._depth.inc()
        self._wake()
        return True

    def _waiting(self) -> int:
        return len(self._buffer) + len(self._spare)

    def _drop(self, topic: str, evicted: bool = False) -> bool:
        with self._lock:
            self._dropped[topic] = self._dropped.get(topic, 0) + 1
            self._drops_to_log[topic] = self._drops_to_log.get(topic, 0) + 1
            if evicted:
                self._evicted[topic] = self._evicted.get(topic, 0) + 1
            self._drops_unlogged += 1
        self._metrics.dropped.labels(topic).inc()
        if evicted:
            self._metrics.evicted.labels(topic).inc()
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
            by_topic, self._drops_to_log = self._drops_to_log, {}
            waiting, spare = self._waiting(), len(self._spare)
        topics = ", ".join(f"{topic} {n}" for topic, n in sorted(by_topic.items(), key=lambda kv: -kv[1]))
        log.warning("event publisher %s: outgoing buffer full (%d events waiting for the broker at %s, %d of them "
                    "best-effort): dropped %d event(s)%s (%s; best-effort ones first, attendance evidence last); "
                    "is the broker reachable? (more drops are summed up every %.0f s)",
                    self._name, waiting, self.bootstrap_servers, spare, count,
                    "" if force else " since the last report", topics, self._drop_log_interval_s)

    # ------------------------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "bootstrap_servers": self.bootstrap_servers,
                "connected": self.connected,
                "buffered": self._waiting(),  # waiting, in flight included
                "buffered_best_effort": len(self._spare),
                "in_flight": self._in_flight + self._in_flight_spare,
                "max_buffer": self.max_buffer,
                "published": sum(self._published.values()),
                "dropped": sum(self._dropped.values()),  # buffer full
                "rejected": sum(self._rejected.values()),  # refused for good
                "lost_at_stop": self._lost_at_stop,
                "send_errors": self._send_errors,
                "connect_failures": self._connect_failures,
                "published_by_topic": dict(self._published),
                "dropped_by_topic": dict(self._dropped),
                "evicted_by_topic": dict(self._evicted),  # best-effort events evicted for evidence (in dropped)
                "rejected_by_topic": dict(self._rejected),
            }

    # ----------------------------------------------------------------------------------- sender
    async def _run(self) -> None:
        # Not infra.foundation.retry: one delay is shared by connecting and sending, the pause is cut short
        # by stop() when nothing is left to send, and the loop ends there rather than on an exception.
        backoff = self._backoff[0]
        failed_in_a_row = 0
        while True:
            if self._stopping and not self._waiting():
                return
            try:
                if self._producer is None:
                    if not await self._connect(backoff):
                        await self._pause(backoff)
                        backoff = min(backoff * 2, self._backoff[1])
                        continue
                    backoff = self._backoff[0]
                with self._lock:  # the evidence first, best-effort events in what room is left
                    batch = list(itertools.islice(self._buffer, self.max_batch))
                    self._in_flight = len(batch)
                    spare = list(itertools.islice(self._spare, self.max_batch - len(batch)))
                    self._in_flight_spare = len(spare)
                    batch += spare
                if not batch:
                    self._wakeup.clear()
                    if not self._waiting() and not self._stopping:
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
                    self._in_flight = self._in_flight_spare = 0
                retry, error = True, exc
            if not retry:
                backoff, failed_in_a_row = self._backoff[0], 0
                continue
            self._send_errors += 1
            self._metrics.send_errors.inc()
            failed_in_a_row += 1
            log.warning("event publisher %s: sending to the Kafka broker at %s failed (%s); %d event(s) kept in "
                        "the buffer, retrying in %.1f s", self._name, self.bootstrap_servers,
                        _short(error), self._waiting(), backoff)
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
                        self._name, self.bootstrap_servers, _short(exc), self._waiting(), self.max_buffer,
                        backoff)
            return False
        self._producer = producer
        log.info("event publisher %s: connected to the Kafka broker at %s (%d event(s) waiting)",
                 self._name, self.bootstrap_servers, self._waiting())
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` before the next attempt; cut short by stop() when nothing is left to send."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopping and not self._waiting():
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
        main = self._in_flight  # the batch: the first _in_flight of _buffer, then the first of _spare
        again = [outcome == "retry" for outcome in outcomes]
        retry_main = [pending for pending, r in zip(batch[:main], again[:main]) if r]
        retry_spare = [pending for pending, r in zip(batch[main:], again[main:]) if r]
        retry = retry_main + retry_spare
        with self._lock:
            for _ in range(main):
                self._buffer.popleft()
            for _ in range(len(batch) - main):
                self._spare.popleft()
            self._buffer.extendleft(reversed(retry_main))
            self._spare.extendleft(reversed(retry_spare))
            self._in_flight = self._in_flight_spare = 0
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
