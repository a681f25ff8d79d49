"""Kafka messages to sighting rows for the attendance writer, or a dead-letter reason.

Full JSON Schema validation (:func:`processor.events.decode`) costs ~0.3 ms a message, so the writer checks
by default only what it relies on, at a few microseconds: JSON object, event type of the topic, the
topic's major version, and the fields it stores (UUIDs, ids, real UTC timestamps, identity rules). Any
message that fails that check goes through ``decode`` for the canonical reason. ``full_validation=True``
(``[attendance] full_validation``) validates every message against its schema instead.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from processor.events import MalformedEvent, decode

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$")
_VERSION_1 = re.compile(r"^1\.(0|[1-9][0-9]{0,3})$")
_PRESENCE_KINDS = frozenset(("enter", "update", "exit", "identity"))
_IDENTITY_SOURCES = frozenset(("handoff", "face", "reacquired", "none"))

# Columns of the writer's staging table, in order (see consumers.store).
STAGE_COLUMNS = ("seq", "event_id", "kind", "room_id", "camera_id", "track_id", "person_id", "frame_time",
                 "first_seen", "last_seen", "recognition_event_id", "identity_source", "topic", "kafka_partition",
                 "kafka_offset")


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


class _Reject(Exception):
    pass


def _time(value: Any) -> dt.datetime:
    if type(value) is not str or not _TIMESTAMP.match(value):
        raise _Reject
    return dt.datetime.fromisoformat(value)  # ValueError for a date that does not exist


def _text(value: Any, limit: int = 128) -> str:
    if type(value) is not str or not 0 < len(value) <= limit:
        raise _Reject
    return value


def _slug(value: Any) -> str:
    if type(value) is not str or not _ID.match(value):
        raise _Reject
    return value


def _person(event: dict) -> str | None:
    identity, person = event["identity"], event["person_id"]
    if identity == "known" and type(person) is str and 0 < len(person) <= 128:
        return person
    if identity == "unknown" and person is None:
        return None
    raise _Reject


def _presence_row(event: dict) -> tuple | None:
    kind = event["kind"]
    if kind not in _PRESENCE_KINDS:
        raise _Reject
    handoff = event["handoff"]
    recognition_id = None
    if handoff is not None:
        if type(handoff) is not dict or not _UUID.match(str(handoff.get("recognition_event_id", ""))):
            raise _Reject
        recognition_id = handoff["recognition_event_id"]
    source = event["identity_source"]
    if source not in _IDENTITY_SOURCES:
        raise _Reject
    return (kind, _slug(event["room_id"]), _slug(event["camera_id"]), _text(event["track_id"]), _person(event),
            _time(event["frame_time"]), _time(event["first_seen"]), _time(event["last_seen"]), recognition_id, source)


def _recognition_row(event: dict) -> tuple | None:
    person = _person(event)
    if person is None:
        return None  # an unknown face at a door proves nobody's attendance
    frame_time = _time(event["frame_time"])
    # A door recognition is an arrival: a zero-length sighting at the door at its best frame.
    return ("recognition", _slug(event["room_id"]), _slug(event["camera_id"]), _text(event["track_id"]), person,
            frame_time, frame_time, frame_time, None, None)


_ROW_BUILDERS = {"presence": _presence_row, "recognition": _recognition_row}


class MessageReader:
    """Turns one topic's messages into staging rows (``STAGE_COLUMNS`` without ``seq``)."""

    def __init__(self, topic_types: dict[str, str], *, full_validation: bool = False):
        self.topic_types = topic_types  # topic name -> the event type it carries
        self.full_validation = full_validation

    def read(self, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None) -> tuple[str, tuple | None] | DeadLetter:
        """(event_id, row or None when the event needs no row), or the dead letter for this message."""
        expected = self.topic_types[topic]
        try:
            event = self._checked(topic, value, expected)
            row = _ROW_BUILDERS[expected](event)
        except MalformedEvent as exc:
            return DeadLetter(topic, partition, offset, key, value, str(exc.args[0]))
        except (_Reject, KeyError, ValueError, TypeError):
            try:  # the canonical reason; the schema may accept what the fast check did not
                event = decode(topic, value)
                if event.get("event_type") != expected:
                    raise MalformedEvent(f"a {event.get('event_type')} event on a {expected} topic", topic=topic)
                row = _ROW_BUILDERS[expected](event)
            except MalformedEvent as exc:
                return DeadLetter(topic, partition, offset, key, value, str(exc.args[0]))
            except (_Reject, KeyError, ValueError, TypeError) as exc:
                return DeadLetter(topic, partition, offset, key, value, f"{topic}: unusable fields ({exc!r})")
        if row is None:
            return event["event_id"], None
        return event["event_id"], (event["event_id"], *row, topic, partition, offset)

    def _checked(self, topic: str, value: bytes | None, expected: str) -> dict:
        if self.full_validation:
            event = decode(topic, value)
        else:
            event = json.loads(value)
            if type(event) is not dict or type(event.get("schema_version")) is not str:
                raise _Reject
            if not _VERSION_1.match(event["schema_version"]) or not _UUID.match(event.get("event_id") or ""):
                raise _Reject
        if event.get("event_type") != expected:
            if event.get("event_type") in self.topic_types.values():
                raise MalformedEvent(f"a {event.get('event_type')} event on a {expected} topic", topic=topic)
            raise _Reject
        return event
