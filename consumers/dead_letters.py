"""Dead letters: a message the writer cannot use goes to the dead-letter topic with the reason. A dead
letter keeps at most ``dead_letter_max_value_bytes`` of the value (flagged ``truncated``), so it always fits
the producer's limit; one the broker still refuses as too large goes again without the message."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from consumers.failures import BrokerAway, one_line
from consumers.records import DeadLetter, clean_reason
from schemas.events import build_event, encode, now_timestamp

log = logging.getLogger("rollcall.writer")

_DEAD_LETTER_NS = uuid.UUID("6f0d3c1e-4a7b-4f7e-9a53-0d1f2e3c4b5a")
_DEAD_LETTER_KEY_BYTES = 4096


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


def without_payload(event: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The dead letter without the message (the broker refused it as too large even cut)."""
    reason = clean_reason(f"{event['reason']} (message not kept: {one_line(exc)})")
    return {**event, "key_base64": None, "value_base64": None, "truncated": True, "reason": reason}


def dead_counts(dead: list[DeadLetter]) -> dict[str, tuple[int, str]]:
    """{topic: (dead letters, the last reason)} for consumer_dead_letter."""
    counts: dict[str, tuple[int, str]] = {}
    for letter in dead:
        counts[letter.topic] = (counts.get(letter.topic, (0, ""))[0] + 1, letter.reason[:500])
    return counts


class DeadLetterSender:
    """Sends dead letters to the dead-letter topic; the broker failing to take one raises :class:`BrokerAway`."""

    def __init__(self, producer: AIOKafkaProducer, *, topic: str, group: str, max_value_bytes: int):
        self.producer = producer
        self.topic = topic
        self.group = group
        self.max_value_bytes = max_value_bytes

    async def send(self, dead: list[DeadLetter]) -> None:
        """Send every dead letter; one the broker refuses as too large goes again without the message."""
        try:
            sent = []
            for letter in dead:
                event = dead_letter_event(letter, self.group, max_value_bytes=self.max_value_bytes)
                try:
                    future = await self._send(letter, event)
                except MessageSizeTooLargeError as exc:
                    event = without_payload(event, exc)
                    future = await self._send(letter, event)
                sent.append((letter, event, future))
            results = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
            for (letter, event, _), result in zip(sent, results):
                if isinstance(result, MessageSizeTooLargeError):  # the broker's own limit is lower
                    await (await self._send(letter, without_payload(event, result)))
                elif isinstance(result, BaseException):
                    raise result
        except Exception as exc:
            raise BrokerAway(f"dead-letter topic {self.topic}: {one_line(exc)}") from None
        for letter in dead:
            log.warning("dead letter %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason)

    async def _send(self, letter: DeadLetter, event: dict[str, Any]) -> asyncio.Future:
        """Queue one dead letter (keyed by its source topic); the future resolves when the broker has it."""
        return await self.producer.send(self.topic, key=letter.topic.encode(), value=encode(event))
