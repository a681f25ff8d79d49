"""The room stage's recognition feed: door recognitions read from Kafka, so door and room cameras may run
in different processes or machines.

    recognition topic (Kafka) → RecognitionFeed → asyncio.Queue of DoorRecognition → RoomStage
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from infra.foundation.kafka import assign_from_end, tail_consumer
from infra.foundation.retry import connected, reconnecting
from processor.appearance import Appearance
from schemas.events import MalformedEvent, decode

log = logging.getLogger("rollcall.room")


@dataclass
class DoorRecognition:
    door_camera: str
    person_id: str | None
    event_id: str
    door_time: float  # Unix seconds: when the face track started at the door camera
    appearance: Appearance | None = None  # clothing below the face (recognition 1.1; None from 1.0)
    side: str | None = None  # half of the door camera's image the face was in (1.1)


class RecognitionFeed:
    """Reads door recognitions from Kafka (from the topic's end at start: old ones are past any transit
    window) and queues those of the configured door cameras for the room stage."""

    def __init__(self, bootstrap_servers: str, topic: str, door_cameras: set[str], out: asyncio.Queue, *,
                 client_id: str = "rollcall-room"):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.door_cameras = door_cameras
        self.out = out
        self.client_id = client_id
        self.received = 0
        self.malformed = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async for attempt in reconnecting(what=f"recognition feed from {self.bootstrap_servers}",
                                          errors=(KafkaError, OSError), log=log):
            with attempt:
                consumer = tail_consumer(self.bootstrap_servers, client_id=self.client_id)
                try:
                    await consumer.start()
                    await assign_from_end(consumer, [self.topic])
                    self.ready.set()
                    connected(attempt)
                    while True:
                        batches = await consumer.getmany(timeout_ms=200)
                        for records in batches.values():
                            for record in records:
                                self._take(record.value)
                finally:
                    await consumer.stop()

    def _take(self, value: bytes) -> None:
        """Queue one recognition of a configured door camera; a malformed one is counted and skipped."""
        try:
            event = decode(self.topic, value)
        except MalformedEvent as exc:
            self.malformed += 1
            log.warning("skipping a malformed recognition: %s", exc)
            return
        if event["camera_id"] not in self.door_cameras:
            return
        self.received += 1
        # The track's first sighting: known faces are decided early (mid-approach) and
        # unknown ones at track end, so last_seen would bias their order; first_seen
        # is when each person came into the door camera's view, the same for both.
        door_time = dt.datetime.fromisoformat(event["first_seen"]).timestamp()
        recognition = DoorRecognition(
            event["camera_id"], event["person_id"], event["event_id"], door_time,
            appearance=Appearance.from_event(event.get("appearance")), side=event.get("side"))
        if self.out.full():
            self.out.get_nowait()  # the oldest is the least useful
        self.out.put_nowait(recognition)
