"""Room cameras' live tracks checkpointed to a compacted topic, so that the camera's next owner in the
processor group resumes them instead of starting a room full of unknowns.

    RoomStage.checkpoint(camera) → publisher → room_tracks topic (compacted, key = camera id)
    room_tracks topic → CheckpointTable (every member reads it from the beginning and keeps the latest
        checkpoint per camera, Kafka Streams' "global table") → RoomStage.resume(camera, checkpoint)

The checkpoint is internal state between processors, not part of the event contract: it is versioned
by ``format`` and an unreadable one is skipped (logged and counted), never fatal; the tracks then start
afresh, as they did before checkpoints existed.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.foundation.kafka import tail_consumer
from infra.foundation.retry import connected, reconnecting

log = logging.getLogger("rollcall.room")

FORMAT = 1


class TrackState(BaseModel):
    """One live room track: who it is, where it was, what it looked like."""

    model_config = ConfigDict(extra="ignore")

    track_id: str = Field(min_length=1, max_length=128)
    person_id: str | None = Field(default=None, max_length=128)
    identity_source: str = "none"
    handoff: dict | None = None
    first_seen: float
    last_seen: float
    box: tuple[float, float, float, float]
    frame_size: tuple[int, int]
    look: list[float] | None = Field(default=None, max_length=4096)  # torso colour signature
    entered_via: str | None = None  # the door it came in through, while its handoff may still be pending
    face_decided: bool = False


class RoomCheckpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = FORMAT
    camera_id: str = Field(min_length=1, max_length=128)
    owner: str = Field(min_length=1, max_length=200)  # the processor that wrote it
    at: float  # Unix seconds: the capture time of the last frame it describes
    tracks: list[TrackState] = Field(default_factory=list, max_length=1000)

    def encode(self) -> dict:
        return self.model_dump(mode="json")


def parse_checkpoint(value: bytes | None) -> RoomCheckpoint | None:
    """A checkpoint from a message value; None for a tombstone; ValueError when unreadable."""
    if value is None:
        return None
    try:
        checkpoint = RoomCheckpoint.model_validate(json.loads(value))
    except (ValueError, ValidationError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    if checkpoint.format != FORMAT:
        raise ValueError(f"checkpoint format {checkpoint.format}, this processor reads {FORMAT}")
    return checkpoint


class CheckpointTable:
    """The latest checkpoint of every room camera, read from the compacted topic from its beginning and
    then followed; ``get`` answers from memory."""

    def __init__(self, bootstrap_servers: str, topic: str, *, client_id: str = "rollcall-checkpoints"):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.client_id = client_id
        self.latest: dict[str, RoomCheckpoint] = {}
        self.unreadable = 0
        self.ready = asyncio.Event()  # the topic read up to where it was at start

    def get(self, camera_id: str) -> RoomCheckpoint | None:
        return self.latest.get(camera_id)

    async def run(self) -> None:
        async for attempt in reconnecting(what=f"room checkpoints from {self.bootstrap_servers}",
                                          errors=(KafkaError, OSError), log=log):
            with attempt:
                consumer = tail_consumer(self.bootstrap_servers, client_id=self.client_id,
                                         auto_offset_reset="earliest")
                try:
                    await consumer.start()
                    partitions = await self._assign(consumer)
                    connected(attempt)
                    while True:
                        batches = await consumer.getmany(timeout_ms=300)
                        for records in batches.values():
                            for record in records:
                                self._take(record.key, record.value)
                        if not self.ready.is_set() and not any(batches.values()):
                            self.ready.set()  # caught up (a quiet read), or the topic is empty
                        if not partitions:
                            partitions = await self._assign(consumer)
                finally:
                    await consumer.stop()

    async def _assign(self, consumer) -> list[TopicPartition]:
        ids = consumer.partitions_for_topic(self.topic)
        if not ids:
            await consumer.topics()
            ids = consumer.partitions_for_topic(self.topic) or set()
        partitions = [TopicPartition(self.topic, p) for p in sorted(ids)]
        if partitions:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        else:
            log.warning("room checkpoints: topic %s does not exist; room tracks will not be resumed", self.topic)
            self.ready.set()
            await asyncio.sleep(5.0)
        return partitions

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        camera_id = key.decode("utf-8", "replace") if key else None
        try:
            checkpoint = parse_checkpoint(value)
        except ValueError as exc:
            self.unreadable += 1
            log.warning("room checkpoint for %s unreadable, skipped: %s", camera_id, exc)
            return
        if checkpoint is None:
            if camera_id:
                self.latest.pop(camera_id, None)
            return
        current = self.latest.get(checkpoint.camera_id)
        if current is None or checkpoint.at >= current.at:
            self.latest[checkpoint.camera_id] = checkpoint
