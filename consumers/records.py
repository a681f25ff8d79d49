"""Kafka messages to sighting rows for the attendance writer, or a dead-letter reason.

Full JSON Schema validation (:func:`schemas.events.decode`) costs ~0.3 ms a message, so the writer checks
by default only what it relies on, at a few microseconds: JSON object, event type of the topic, the
topic's major version, and the fields it stores (UUIDs, ids, real UTC timestamps, identity rules). Any
message that fails that check goes through ``decode`` for the canonical reason. ``full_validation=True``
(``[attendance] full_validation``) validates every message against its schema instead.

Anything a message's content can cause is that message's problem: whatever reading it raises (a
``RecursionError`` from deep nesting included) makes it a dead letter, never a failure of the writer. Text
PostgreSQL cannot store (NUL, unpaired surrogates) and event times outside the plausibility bounds
(:class:`TimeBounds`: ahead of or far behind the writer's clock, one track spanning more than a day, far
from the rest of its batch: :func:`batch_outliers`) are rejected here, before the database sees them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import msgspec
from pydantic_core import from_json

from schemas.events import MalformedEvent, decode

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


@dataclass(frozen=True)
class TimeBounds:
    """Plausible event times (``[attendance] max_event_*``, ``max_track_span_s``, ``max_batch_spread_s``)."""

    max_future_s: float = 600.0
    max_age_days: float = 3650.0
    max_track_span_s: float = 86400.0
    max_batch_spread_s: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, settings: Any) -> "TimeBounds":
        return cls(settings.max_event_future_s, settings.max_event_age_days, settings.max_track_span_s,
                   settings.max_batch_spread_s)


class _Reject(Exception):
    """The fast check's refusal; its argument (when given) is the reason for the dead letter."""


_PARSED_TIMES_KEPT = 20_000
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc)


def _time(value: Any, parsed: dict[str, dt.datetime]) -> dt.datetime:
    """The timestamp ``value``; ``parsed`` remembers the ones read before (a track's events repeat its
    first_seen, an event's last_seen is mostly its frame_time)."""
    if type(value) is not str:
        raise _Reject
    moment = parsed.get(value)
    if moment is None:
        if not _TIMESTAMP.fullmatch(value):
            raise _Reject
        moment = dt.datetime.fromisoformat(value)  # ValueError for a date that does not exist
        if len(parsed) >= _PARSED_TIMES_KEPT:
            parsed.clear()
        parsed[value] = moment
    return moment


def _storable(value: str) -> bool:
    """PostgreSQL text takes neither NUL nor what is not UTF-8 (an unpaired surrogate from a JSON escape)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, limit: int = 128, name: str = "track_id") -> str:
    if type(value) is not str or not 0 < len(value) <= limit:
        raise _Reject
    if not _storable(value):
        raise _Reject(f"{name} holds a NUL character or an unpaired surrogate (not storable text)")
    return value


def _slug(value: Any) -> str:
    if type(value) is not str or not _ID.fullmatch(value):
        raise _Reject
    return value


def _person(event: dict) -> str | None:
    identity, person = event["identity"], event["person_id"]
    if identity == "known" and type(person) is str:
        return _text(person, 128, "person_id")
    if identity == "unknown" and person is None:
        return None
    raise _Reject


def _presence_row(event: dict, parsed: dict[str, dt.datetime]) -> tuple | None:
    kind = event["kind"]
    if kind not in _PRESENCE_KINDS:
        raise _Reject
    handoff = event["handoff"]
    recognition_id = None
    if handoff is not None:
        if type(handoff) is not dict or not _UUID.fullmatch(str(handoff.get("recognition_event_id", ""))):
            raise _Reject
        recognition_id = handoff["recognition_event_id"]
    source = event["identity_source"]
    if source not in _IDENTITY_SOURCES:
        raise _Reject
    return (kind, _slug(event["room_id"]), _slug(event["camera_id"]), _text(event["track_id"]), _person(event),
            _time(event["frame_time"], parsed), _time(event["first_seen"], parsed), _time(event["last_seen"], parsed),
            recognition_id, source)


def _recognition_row(event: dict, parsed: dict[str, dt.datetime]) -> tuple | None:
    person = _person(event)
    if person is None:
        return None  # an unknown face at a door proves nobody's attendance
    frame_time = _time(event["frame_time"], parsed)
    # A door recognition is an arrival: a zero-length sighting at the door at its best frame.
    return ("recognition", _slug(event["room_id"]), _slug(event["camera_id"]), _text(event["track_id"]), person,
            frame_time, frame_time, frame_time, None, None)


_ROW_BUILDERS = {"presence": _presence_row, "recognition": _recognition_row}


# The presence fields the writer reads, as the checks above want them, decoded by msgspec in one pass over
# the message's bytes without making objects of the rest: 2.5x as fast as pydantic-core's validator of the
# same fields (1.1 against 2.6 us a message; that validator was a third of the writer's time). A message it
# takes gives the same values as json.loads (the last of a repeated key included; it refuses more: NaN, a
# UTF-8 BOM, escaped lone surrogates, numbers out of range, deep nesting); one it refuses goes through the
# checks above. The id patterns are checked after it, in Python: msgspec's patterns run Python's re per
# field, and room, camera and schema version repeat, so their verdicts are cached (_known_id,
# _known_version).
class _HandoffFields(msgspec.Struct):
    recognition_event_id: str


class _PresenceFields(msgspec.Struct):
    event_id: str
    event_type: Literal["presence"]
    schema_version: str
    kind: Literal["enter", "update", "exit", "identity"]  # _PRESENCE_KINDS
    handoff: Optional[_HandoffFields]
    identity_source: Literal["handoff", "face", "reacquired", "none"]  # _IDENTITY_SOURCES
    room_id: str
    camera_id: str
    track_id: Any  # the rest as _presence_row checks them
    identity: Any
    person_id: Any
    frame_time: Any
    first_seen: Any
    last_seen: Any


# bounded caches of the pattern's verdict on each value (a stream of distinct values cannot grow them for ever)
_known_id = functools.lru_cache(maxsize=4096)(lambda value: _ID.fullmatch(value) is not None)
_known_version = functools.lru_cache(maxsize=64)(lambda value: _VERSION_1.fullmatch(value) is not None)
_UUID_MATCH = _UUID.fullmatch


def _storable_text(value: Any) -> bool:
    """_text's check as one expression (the fast path's): 1 to 128 characters of storable text."""
    return (type(value) is str and 0 < len(value) <= 128 and "\x00" not in value
            and (value.isascii() or _storable(value)))


# Within this much of a plausibility bound the fast path leaves the decision to the checks above (datetimes,
# exact); farther inside, comparing the times as Unix seconds (floats, exact to well under a microsecond at
# these magnitudes) cannot decide otherwise.
_BOUND_MARGIN_S = 0.001


def _checked_presence_row(reader: "MessageReader", event: _PresenceFields, topic: str, partition: int,
                          offset: int) -> tuple:
    """The staging row of the fields _PresenceFields took (kind and identity_source are as it wants):
    _presence_row's checks and _check_times' bounds in one pass, the times compared as seconds. Raises
    _Reject for anything it does not take (the checks above then decide, and say why)."""
    event_id, handoff, track, identity, person = (event.event_id, event.handoff, event.track_id, event.identity,
                                                  event.person_id)
    if not (_UUID_MATCH(event_id) and _known_version(event.schema_version) and _known_id(event.room_id)
            and _known_id(event.camera_id) and _storable_text(track)):
        raise _Reject
    if handoff is not None and not _UUID_MATCH(handoff.recognition_event_id):
        raise _Reject
    if identity == "known":
        if not _storable_text(person):
            raise _Reject
    elif identity != "unknown" or person is not None:
        raise _Reject
    moment = reader.moment
    frame, first, last = moment(event.frame_time), moment(event.first_seen), moment(event.last_seen)
    low = high = frame[1]  # comparisons, not min()/max(): a tenth of the reader's time went to those calls
    for seconds in (first[1], last[1]):
        if seconds < low:
            low = seconds
        elif seconds > high:
            high = seconds
    earliest_s, latest_s, span_s = reader.fast_bounds_s
    if low < earliest_s or high > latest_s or high - low > span_s:
        raise _Reject  # near or past a bound: _check_times decides
    return (event_id, event.kind, event.room_id, event.camera_id, track, person, frame[0], first[0], last[0],
            None if handoff is None else handoff.recognition_event_id, event.identity_source, topic, partition,
            offset)


_FIELDS = {"presence": (msgspec.json.Decoder(_PresenceFields).decode, _checked_presence_row)}


def clean_reason(text: str, limit: int = 2000) -> str:
    """A dead letter's reason: one line of storable text (the reason may quote the message), at most ``limit``."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    text = " ".join(text.split())
    return (text[: limit - 1] + "…" if len(text) > limit else text) or "unusable message"


class MessageReader:
    """Turns one topic's messages into staging rows (``STAGE_COLUMNS`` without ``seq``)."""

    def __init__(self, topic_types: dict[str, str], *, full_validation: bool = False,
                 bounds: TimeBounds | None = None):
        self.topic_types = topic_types  # topic name -> the event type it carries
        self.full_validation = full_validation
        self.bounds = bounds or TimeBounds()
        self._window: tuple[dt.datetime, dt.datetime] | None = None
        self._parsed: dict[str, dt.datetime] = {}  # timestamps read (see _time)
        self._moments: dict[str, tuple[dt.datetime, float]] = {}  # the fast path's: (datetime, Unix seconds)
        # per topic: (the event type it carries, the fast path's field validator and row builder, or None)
        self._routes: dict[str, tuple[str, Any]] = {}
        self.fast_bounds_s = (0.0, 0.0, 0.0)  # the fast path's window and track span, _BOUND_MARGIN_S inside

    def begin_batch(self, now: float | None = None) -> None:
        """Judge the next messages against the clock at ``now`` (default: the wall clock now)."""
        now = time.time() if now is None else now
        earliest = now - self.bounds.max_age_days * 86400.0
        self._window = (max(_EARLIEST, dt.datetime.fromtimestamp(max(earliest, -62135510400.0), dt.timezone.utc)),
                        min(_LATEST, dt.datetime.fromtimestamp(now + self.bounds.max_future_s, dt.timezone.utc)))
        self.fast_bounds_s = (self._window[0].timestamp() + _BOUND_MARGIN_S, self._window[1].timestamp() - _BOUND_MARGIN_S,
                          self.bounds.max_track_span_s - _BOUND_MARGIN_S)

    def moment(self, value: Any) -> tuple[dt.datetime, float]:
        """(the timestamp ``value`` as _time reads it, its Unix seconds), kept for the next messages."""
        found = self._moments.get(value)
        if found is not None:
            return found
        moment = _time(value, self._parsed)
        if len(self._moments) >= _PARSED_TIMES_KEPT:
            self._moments.clear()
        self._moments[value] = found = (moment, moment.timestamp())
        return found

    def read(self, topic: str, partition: int, offset: int, key: bytes | None,
             value: bytes | None) -> tuple[str, tuple | None] | DeadLetter:
        """(event_id, row or None when the event needs no row), or the dead letter for this message.
        Never raises for what the message holds."""
        route = self._routes.get(topic)
        if route is None:
            expected = self.topic_types[topic]
            self._routes[topic] = route = (expected, None if self.full_validation else _FIELDS.get(expected))
        expected, fast = route
        try:
            event = None
            if fast is not None:
                try:
                    event = fast[0](value)
                except Exception:  # noqa: BLE001 - ValidationError, TypeError (no value): the full checks decide
                    event = None
            if event is not None:
                if self._window is None:
                    self.begin_batch()
                row = fast[1](self, event, topic, partition, offset)
                return row[0], row
            else:
                event = self._checked(topic, value, expected)
                row = self._row(expected, event)
        except MalformedEvent as exc:
            return DeadLetter(topic, partition, offset, key, value, clean_reason(str(exc.args[0])))
        except Exception:  # noqa: BLE001 - _Reject, KeyError, ..., RecursionError: the slow path says why
            try:  # the canonical reason; the schema may accept what the fast check did not
                event = decode(topic, value)
                if event.get("event_type") != expected:
                    raise MalformedEvent(f"a {event.get('event_type')} event on a {expected} topic", topic=topic)
                row = self._row(expected, event)
            except MalformedEvent as exc:
                return DeadLetter(topic, partition, offset, key, value, clean_reason(str(exc.args[0])))
            except _Reject as exc:
                why = exc.args[0] if exc.args else "unusable fields"
                return DeadLetter(topic, partition, offset, key, value, clean_reason(f"{topic}: {why}"))
            except Exception as exc:  # noqa: BLE001 - whatever content can cause is the message's problem
                return DeadLetter(topic, partition, offset, key, value,
                                  clean_reason(f"{topic}: unusable message ({type(exc).__name__}: {str(exc)[:300]})"))
        if row is None:
            return event["event_id"], None
        return event["event_id"], (event["event_id"], *row, topic, partition, offset)

    def _row(self, expected: str, event: dict) -> tuple | None:
        row = _ROW_BUILDERS[expected](event, self._parsed)
        if row is not None:
            self._check_times(row[5], row[6], row[7])
        return row

    def _check_times(self, frame_time: dt.datetime, first_seen: dt.datetime, last_seen: dt.datetime) -> None:
        if self._window is None:
            self.begin_batch()
        earliest, latest = self._window
        low, high = min(frame_time, first_seen, last_seen), max(frame_time, first_seen, last_seen)
        if high > latest:
            raise _Reject(f"event time {high.isoformat()} is more than {self.bounds.max_future_s:g} s ahead of "
                          "the writer's clock ([attendance] max_event_future_s)")
        if low < earliest:
            raise _Reject(f"event time {low.isoformat()} is more than {self.bounds.max_age_days:g} days behind "
                          "the writer's clock ([attendance] max_event_age_days)")
        if (high - low).total_seconds() > self.bounds.max_track_span_s:
            raise _Reject(f"first_seen, frame_time and last_seen span {(high - low).total_seconds():.0f} s, more "
                          f"than {self.bounds.max_track_span_s:g} s ([attendance] max_track_span_s)")

    def _checked(self, topic: str, value: bytes | None, expected: str) -> dict:
        if self.full_validation:
            event = decode(topic, value)
        else:
            event = _parse(value)
            if type(event) is not dict or type(event.get("schema_version")) is not str:
                raise _Reject
            if not _VERSION_1.fullmatch(event["schema_version"]) or not _UUID.fullmatch(event.get("event_id") or ""):
                raise _Reject
        if event.get("event_type") != expected:
            if event.get("event_type") in self.topic_types.values():
                raise MalformedEvent(f"a {event.get('event_type')} event on a {expected} topic", topic=topic)
            raise _Reject
        return event


def _parse(value: bytes | None) -> Any:
    """``json.loads(value)``, twice as fast: pydantic-core's parser gives the same objects for what it takes
    (checked on the edge cases: escapes, NUL, duplicate keys, NaN, big numbers) and refuses, among what
    json.loads takes, only a UTF-8 BOM, escaped lone surrogates and deep nesting: json.loads decides those,
    and everything else it refuses, as before."""
    try:
        return from_json(value)
    except Exception:  # noqa: BLE001 - json.loads has the last word (and raises what it raised before)
        return json.loads(value)


def batch_outliers(rows: Sequence[tuple], max_spread_s: float) -> dict[int, str]:
    """{index: reason} of the staging rows whose frame time is more than ``max_spread_s`` from the batch's
    median frame time (of two middle ones, the later: events arrive live, the stale one is the odd one).
    0 turns the bound off."""
    if not max_spread_s or len(rows) < 2:
        return {}
    times = sorted(row[6] for row in rows)
    median = times[len(times) // 2]
    spread = dt.timedelta(seconds=max_spread_s)
    if times[0] >= median - spread and times[-1] <= median + spread:
        return {}
    return {i: (f"frame_time {row[6].isoformat()} is more than {max_spread_s:g} s from its batch's median "
                f"{median.isoformat()} ([attendance] max_batch_spread_s)")
            for i, row in enumerate(rows) if abs(row[6] - median) > spread}
