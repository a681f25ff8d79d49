"""Reading what a run published: a topic from its current end, without a consumer group."""

from __future__ import annotations

import logging
import time

from infra.foundation.errors import RollcallError
from infra.foundation.kafka import TopicsMissing, assign_from_end, tail_consumer
from schemas.events import MalformedEvent, decode

log = logging.getLogger("rollcall.scenario")


class TopicReader:
    """Reads a topic from its current end (no consumer group: a pure observer)."""

    def __init__(self, consumer, topic: str):
        self.consumer = consumer
        self.topic = topic

    @classmethod
    async def start(cls, bootstrap: str, topic: str) -> "TopicReader":
        """A reader positioned at the topic's end now, before the processor publishes."""
        consumer = tail_consumer(bootstrap)
        await consumer.start()
        try:
            await assign_from_end(consumer, [topic])
        except TopicsMissing:
            await consumer.stop()
            raise RollcallError(f"topic {topic} does not exist on {bootstrap}: run `rollcall up` to create it") from None
        return cls(consumer, topic)

    async def read_some(self, timeout_s: float) -> list[dict]:
        """What arrived since the last read, waiting at most ``timeout_s`` for the first of it."""
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000))
        return self._decoded(batches)

    def _decoded(self, batches) -> list[dict]:
        events = []
        for records in batches.values():
            for record in records:
                try:
                    events.append(decode(self.topic, record.value))
                except MalformedEvent as exc:
                    log.warning("malformed event on %s: %s", self.topic, exc)
        return events

    async def read_all(self, timeout_s: float = 30.0, quiet_s: float = 1.5) -> list[dict]:
        """Everything published since ``start``, read until the topic has been quiet for ``quiet_s``
        (call it once the producers of interest have flushed; ``timeout_s`` bounds it when others keep
        writing). Not bounded by end offsets: the bundled broker's ListOffsets(latest) answers the last
        batch's base offset + 1, which would cut the last batch (the exit events) off."""

        events: list[dict] = []
        try:
            deadline = time.monotonic() + timeout_s
            quiet_since = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
                batches = await self.consumer.getmany(timeout_ms=300)
                if any(batches.values()):
                    quiet_since = time.monotonic()
                events += self._decoded(batches)
            return events
        finally:
            await self.consumer.stop()

    async def close(self) -> None:
        await self.consumer.stop()  # a no-op when already stopped
