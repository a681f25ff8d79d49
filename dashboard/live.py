"""The live side of the dashboard: one Kafka reader per dashboard process, fanned out to every client.

:class:`LiveHub` reads the recognitions, presence, occupancy and overlays topics with all partitions
assigned and positioned at their end (no consumer group: nothing to coordinate, nothing committed, a
restart simply starts at "now"). Each event is decoded and validated against its schema once, then:

- recognition / presence: kept in a bounded list of recent events and sent to subscribers;
- presence: also updates the presence board (room → live tracks, expired after ``presence_expiry_s``
  without an event);
- occupancy: kept in a bounded per-room history (analytics charts) and sent to subscribers;
- overlay: the latest per camera, for the video overlay (never sent to subscribers).

A subscriber (one SSE client) has a bounded queue: a client that cannot keep up loses its oldest
events (counted), never slows the others. The SSE text of an event is built once for all clients.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tenacity import RetryCallState

from infra.foundation.kafka import assign_from_end, tail_consumer
from infra.foundation.retry import connected, reconnecting
from schemas.events import MalformedEvent, decode

log = logging.getLogger("rollcall.dashboard.live")

FEED_TYPES = ("recognition", "presence", "occupancy")
# what a broker that is down or going away raises: retried (TopicsMissing is a KafkaError)
FEED_ERRORS = (KafkaError, OSError, RuntimeError, asyncio.TimeoutError)


class StreamLimits:
    """Live streams open per account (WebRTC peers, MJPEG streams, live-feed clients), at most ``per_user``
    each: one account cannot take every slot of the process's shared limits."""

    def __init__(self, per_user: int):
        self.per_user = per_user
        self.open: collections.Counter[str] = collections.Counter()

    def acquire(self, username: str) -> bool:
        if self.open[username] >= self.per_user:
            return False
        self.open[username] += 1
        return True

    def release(self, username: str) -> None:
        self.open[username] -= 1
        if self.open[username] <= 0:
            del self.open[username]


@dataclass(eq=False)
class Subscriber:
    # None: every room; else room -> the time (ISO, UTC) from which its events may be seen. The live
    # feed's handler replaces it as the user's sessions begin and end.
    rooms: dict[str, str] | None
    types: frozenset[str]
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(1000))
    dropped: int = 0

    def offer(self, message: bytes) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(message)
            self.dropped += 1


def visible(event: dict[str, Any], rooms: dict[str, str] | None) -> bool:
    """Whether ``event`` may be shown to a reader of ``rooms`` (room -> since, ISO UTC; None: every room):
    its room is one of them and it happened (frame time) since then."""
    if rooms is None:
        return True
    since = rooms.get(event.get("room_id"))  # type: ignore[arg-type]
    return since is not None and str(event.get("frame_time", "")) >= since


def sse_message(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.get('event_id', '')}\nevent: {event['event_type']}\ndata: {data}\n\n".encode("utf-8")


class LiveHub:
    def __init__(self, bootstrap_servers: str, topics: dict[str, str], *, client_id: str = "rollcall-dashboard",
                 security_protocol: str = "PLAINTEXT", presence_expiry_s: float = 60.0,
                 occupancy_history: int = 3600, recent: int = 200, max_clients: int = 2000, client_queue: int = 1000):
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics  # kind ("recognitions", "presence", "occupancy", "overlays") -> topic name
        self.client_id = client_id
        self.security_protocol = security_protocol
        self.presence_expiry_s = presence_expiry_s
        self.max_clients = max_clients
        self.client_queue = client_queue
        self.recent: collections.deque[dict] = collections.deque(maxlen=recent)
        self.occupancy: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=occupancy_history))
        self.overlays: dict[str, tuple[float, dict]] = {}  # camera -> (monotonic receive time, event)
        # camera -> the last few seconds of overlays by their frame's capture time, to draw each video
        # frame with the analysis of that moment rather than the newest one
        self.overlay_history: dict[str, collections.deque] = {}
        self.board: dict[str, dict[str, dict]] = collections.defaultdict(dict)  # room -> track -> entry
        self.subscribers: set[Subscriber] = set()
        self.state = "starting"
        self.error: str | None = None
        self.received = 0
        self.malformed = 0
        self.connected_at: float | None = None
        self.last_event_at: float | None = None
        self.ready = asyncio.Event()  # set once positioned at the end of every partition
        self._task: asyncio.Task | None = None
        self._consumer = None
        self._by_topic = {name: kind for kind, name in topics.items()}

    # ------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard-live-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sub in list(self.subscribers):
            sub.offer(b"event: bye\ndata: {}\n\n")

    async def _run(self) -> None:
        """Read the topics from their end, reconnecting (0.5 s doubling up to 15 s) whenever the broker fails."""
        async for attempt in reconnecting(what=f"live feed: Kafka at {self.bootstrap_servers}", errors=FEED_ERRORS,
                                          log=log, first_s=0.5, max_s=15.0, on_retry=self._unavailable):
            with attempt:
                consumer = tail_consumer(self.bootstrap_servers, client_id=self.client_id,
                                         security_protocol=self.security_protocol, fetch_max_wait_ms=50,
                                         request_timeout_ms=10_000, metadata_max_age_ms=30_000)
                try:
                    self.state = "connecting"
                    async with asyncio.timeout(15):
                        await consumer.start()
                    await assign_from_end(consumer, list(self._by_topic))  # "ready" means "reading from now"
                    self._consumer = consumer
                    self.state, self.error, self.connected_at = "connected", None, time.time()
                    self.ready.set()
                    connected(attempt)
                    await self._read(consumer)
                finally:
                    self._consumer = None
                    with contextlib.suppress(Exception):  # already failing; the retry reports the cause
                        await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                kind = self._by_topic.get(tp.topic)
                for record in records:
                    self._handle(kind, tp.topic, record.value)
            self._expire()

    def _unavailable(self, retry: RetryCallState) -> None:
        exc = retry.outcome.exception()
        self.state, self.error = "unavailable", f"{type(exc).__name__}: {exc}".strip()

    # ------------------------------------------------------------------------------- events
    def _handle(self, kind: str | None, topic: str, value: bytes | None) -> None:

        try:
            event = decode(topic, value)
        except MalformedEvent:
            self.malformed += 1
            return
        self.received += 1
        self.last_event_at = time.time()
        self.ingest(event)

    def ingest(self, event: dict[str, Any]) -> None:
        """Apply one decoded event (from Kafka, or given directly)."""
        event_type = event["event_type"]
        if event_type == "overlay":
            self.overlays[event["camera_id"]] = (time.monotonic(), event)
            try:
                frame_time = dt.datetime.fromisoformat(event["frame_time"].replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                return
            self.overlay_history.setdefault(event["camera_id"], collections.deque(maxlen=150)).append((frame_time, event))
            return
        if event_type == "occupancy":
            self.occupancy[event["room_id"]].append(
                (event["frame_time"], event["people"], event["people_avg"], event["known"], event["unknown"]))
        elif event_type == "presence":
            self._update_board(event)
            self.recent.append(event)
        elif event_type == "recognition":
            self.recent.append(event)
        else:
            return
        if not self.subscribers:
            return
        message = sse_message(event)
        for sub in self.subscribers:
            if event_type in sub.types and visible(event, sub.rooms):
                sub.offer(message)

    def _update_board(self, event: dict) -> None:
        tracks = self.board[event["room_id"]]
        key = f"{event['camera_id']}/{event['track_id']}"
        if event["kind"] == "exit":
            tracks.pop(key, None)
            return
        entry = tracks.get(key) or {"first_seen": event["first_seen"]}
        entry.update(camera_id=event["camera_id"], track_id=event["track_id"], identity=event["identity"],
                     person_id=event["person_id"], identity_source=event["identity_source"],
                     ambiguous=event["ambiguous"], last_seen=event["last_seen"], dwell_s=event["dwell_s"],
                     _at=time.monotonic())
        tracks[key] = entry

    def _expire(self) -> None:
        limit = time.monotonic() - self.presence_expiry_s
        for tracks in self.board.values():
            for key in [k for k, v in tracks.items() if v["_at"] < limit]:
                del tracks[key]

    # ------------------------------------------------------------------------------- readers
    def subscribe(self, rooms: dict[str, str] | None, types: Iterable[str] = FEED_TYPES) -> Subscriber | None:
        if len(self.subscribers) >= self.max_clients:
            return None
        sub = Subscriber(dict(rooms) if rooms is not None else None, frozenset(types),
                         asyncio.Queue(self.client_queue))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def presence_board(self, rooms: Iterable[str]) -> list[dict]:
        self._expire()
        board = []
        for room in rooms:
            tracks = sorted(self.board.get(room, {}).values(), key=lambda t: t["first_seen"])
            history = self.occupancy.get(room)
            latest = history[-1] if history else None
            board.append({
                "room_id": room,
                "tracks": [{k: v for k, v in t.items() if not k.startswith("_")} for t in tracks],
                "people": len(tracks),
                "known": sum(t["identity"] == "known" for t in tracks),
                "occupancy": dict(zip(("frame_time", "people", "people_avg", "known", "unknown"), latest))
                if latest else None,
            })
        return board

    def occupancy_history(self, room: str, since: str | None = None) -> list[dict]:
        keys = ("t", "people", "people_avg", "known", "unknown")
        return [dict(zip(keys, row)) for row in self.occupancy.get(room, ()) if since is None or row[0] > since]

    def latest_overlay(self, camera_id: str, at: float | None = None, max_age_s: float = 3.0,
                       max_gap_s: float = 0.5) -> dict | None:
        """The camera's overlay to draw: the one analysed nearest ``at`` (a frame's capture time, Unix s)
        when one is within ``max_gap_s`` of it, else the newest (when younger than ``max_age_s``)."""
        item = self.overlays.get(camera_id)
        if item is None or time.monotonic() - item[0] > max_age_s:
            return None
        if at is not None and self.overlay_history.get(camera_id):
            frame_time, event = min(self.overlay_history[camera_id], key=lambda fe: abs(fe[0] - at))
            if abs(frame_time - at) <= max_gap_s:
                return event
        return item[1]

    async def end_offsets(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """End offsets of every partition of ``topics`` (through the hub's connection)."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError(self.error or "not connected to Kafka")
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        async with asyncio.timeout(5):
            ends = await consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    def status(self) -> dict:
        return {"state": self.state, "error": self.error, "bootstrap_servers": self.bootstrap_servers,
                "events_received": self.received, "malformed": self.malformed, "clients": len(self.subscribers),
                "dropped_for_slow_clients": sum(s.dropped for s in self.subscribers),
                "last_event_at": self.last_event_at}
