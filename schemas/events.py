"""Events: build, validate, encode and decode them against the JSON Schema files in ``schemas/``.

The schema files are the only definition of an event (see ``schemas/recognition.v1.json``): the
required fields, their types and ranges, which fields are timestamps, all come from there, so a field
added to the schema needs no change here.

- :func:`recognition_event` builds a recognition event from its fields (``event_id``, ``event_type``
  and ``schema_version`` filled in; ``published_at`` is left to the publisher, which sets it at send
  time) and validates it: a missing, extra or wrong field raises :class:`InvalidEvent` naming it.
- :func:`validate` checks an event against the schema of its ``event_type`` and ``schema_version``.
- :func:`encode` / :func:`decode`: compact UTF-8 JSON. ``decode`` validates, and raises
  :class:`MalformedEvent` (its ``reason`` is what a dead-letter record carries) for anything a consumer
  cannot use: bytes that are not JSON, an unknown event type, a major version other than the topic's,
  a schema violation. An event of a newer minor version than this reader knows may carry new optional
  top-level fields: they are dropped, the rest is validated (the compatibility rules of the schemas).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import uuid
from typing import Any, Iterable, Mapping, Sequence

from jsonschema.exceptions import ValidationError

import schemas

_VERSION = re.compile(r"^([1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})$")
_TOPIC_MAJOR = re.compile(r"\.v([1-9][0-9]*)$")
_PUBLISHED_AT = "published_at"
_PLACEHOLDER_TIME = "1970-01-01T00:00:00Z"
# The order jsonschema errors are reported in when one field has several (the clearest first).
_KEYWORD_RANK = {"required": 0, "additionalProperties": 1, "type": 2, "const": 3, "enum": 3, "format": 4}


class InvalidEvent(ValueError):
    """An event that does not match its schema. ``field`` names it (``"box.x1"``; None: the whole event)."""

    def __init__(self, reason: str, *, field: str | None = None, event_type: str | None = None,
                 about_field: bool = True):
        self.reason = reason
        self.field = field
        self.event_type = event_type
        where = f"{event_type} event" if event_type else "event"
        named = field is not None and about_field
        super().__init__(f"{where}: field {field!r}: {reason}" if named else f"{where}: {reason}")


class MalformedEvent(InvalidEvent):
    """A received message a consumer cannot use; ``reason`` says why (for the dead-letter record)."""

    def __init__(self, reason: str, *, topic: str | None = None, field: str | None = None,
                 event_type: str | None = None, about_field: bool = True):
        self.topic = topic
        super().__init__(reason, field=field, event_type=event_type, about_field=about_field)
        if topic:
            self.args = (f"{topic}: {self.args[0]}",)


# --------------------------------------------------------------------------------------- values
def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_timestamp(value: dt.datetime | float | int | str) -> str:
    """RFC 3339 UTC with milliseconds (``2026-11-22T09:14:03.250Z``) from a timezone-aware datetime or
    from Unix seconds (``time.time()``); a string is returned as it is (the schema checks it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{value!r} has no time zone: give an aware datetime (UTC) or Unix seconds")
        moment = value.astimezone(dt.timezone.utc)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        moment = dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
    else:
        raise ValueError(f"{value!r} is not a time: give an aware datetime or Unix seconds")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_timestamp() -> str:
    return utc_timestamp(dt.datetime.now(dt.timezone.utc))


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, tuples to lists, recursively."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        return item()
    return value


# ------------------------------------------------------------------------------------ schema facts
def schema_name(event_type: str, major: int | None = None) -> str:
    """``recognition`` → ``recognition.v1`` (the newest major, or the given one)."""
    if event_type not in schemas.EVENT_SCHEMAS:
        raise KeyError(event_type)
    return f"{event_type}.v{major}" if major is not None else schemas.EVENT_SCHEMAS[event_type]


def required_fields(event_type: str) -> tuple[str, ...]:
    """The fields every event of this type carries: the newest schema's ``required`` list."""
    return tuple(schemas.validator(schema_name(event_type)).schema["required"])


@functools.cache
def _field_kinds(name: str) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    """From a schema: its timestamp fields, and its object fields with their members' order."""
    timestamps: set[str] = set()
    objects: dict[str, tuple[str, ...]] = {}
    for field, subschema in schemas.validator(name).schema.get("properties", {}).items():
        resolved = schemas.resolve(name, subschema)
        if resolved.get("format") == "date-time":
            timestamps.add(field)
        elif resolved.get("type") == "object" and resolved.get("required"):
            objects[field] = tuple(resolved["required"])
    return frozenset(timestamps), objects


# ----------------------------------------------------------------------------------------- build
def build_event(event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """An event of ``event_type`` from ``fields``, checked against its newest schema.

    Filled in: ``event_id`` (a new UUID unless given), ``event_type``, ``schema_version``. Converted:
    timestamp fields given as aware datetimes or Unix seconds; object fields given as a sequence in the
    schema's member order (``box=(x1, y1, x2, y2)``, ``frame_size=(width, height)``); numpy scalars.
    ``published_at`` stays unset (the publisher sets it at send time). Raises :class:`InvalidEvent`.
    """
    try:
        name = schema_name(event_type)
    except KeyError:
        raise InvalidEvent(f"unknown event type: known are {', '.join(sorted(schemas.EVENT_SCHEMAS))}") from None
    version = schemas.SCHEMA_VERSIONS[event_type]
    for fixed, value in (("event_type", event_type), ("schema_version", version)):
        if fixed in fields and fields[fixed] != value:
            raise InvalidEvent(f"is set by the builder to {value!r}, got {fields[fixed]!r}", field=fixed,
                               event_type=event_type)
    timestamps, objects = _field_kinds(name)
    event: dict[str, Any] = {"event_id": new_event_id(), "event_type": event_type, "schema_version": version}
    for field, value in fields.items():
        if field in timestamps and value is not None:
            try:
                value = utc_timestamp(value)
            except ValueError as exc:
                raise InvalidEvent(str(exc), field=field, event_type=event_type) from None
        elif field in objects and isinstance(value, (tuple, list)) and len(value) == len(objects[field]):
            value = dict(zip(objects[field], value))
        event[field] = _plain(value)
    missing = [field for field in required_fields(event_type) if field not in event and field != _PUBLISHED_AT]
    if missing:
        raise InvalidEvent(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}",
                           field=missing[0], event_type=event_type, about_field=False)
    validate(event, unpublished=True)
    return event


def box_object(box: Sequence[float]) -> dict[str, float]:
    """``(x1, y1, x2, y2)`` as the schemas' box object, for boxes nested inside an event (build_event
    converts top-level fields only)."""
    return {name: round(float(v), 1) for name, v in zip(("x1", "y1", "x2", "y2"), box)}


def recognition_event(**fields: Any) -> dict[str, Any]:
    """A recognition event (``schemas/recognition.v1.json``): one face track at a door, decided.

    Give every required field of the schema but ``event_id`` (optional), ``event_type``,
    ``schema_version`` and ``published_at``: camera_id, room_id, door_id, track_id, person_id, score,
    margin, quality, frames, frame_time, first_seen, last_seen, box, frame_size, model_pack, and
    identity (optional here: "known" when person_id is given, else "unknown"). Optional (since 1.1):
    appearance (the ``Appearance.to_event()`` object of :mod:`processor.appearance`) and side
    ("left"/"right"); since 1.2: liveness ({decision, score, frames, pictured_person_id}); None leaves
    them out.
    See :func:`build_event` for the conversions; raises :class:`InvalidEvent` naming the field.
    """
    for optional in ("appearance", "side", "liveness"):
        if optional in fields and fields[optional] is None:
            del fields[optional]
    if "identity" not in fields:
        fields["identity"] = "unknown" if fields.get("person_id") is None else "known"
    return build_event("recognition", fields)


# -------------------------------------------------------------------------------------- validate
def validate(event: Any, *, unpublished: bool = False) -> None:
    """Raise :class:`InvalidEvent` naming the first wrong field, unless ``event`` matches its schema.

    The schema is chosen by the event's ``event_type`` and the major of its ``schema_version``.
    ``unpublished=True`` accepts an event without ``published_at`` (not sent yet).
    """
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"an event is a JSON object, got {type(event).__name__}")
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or event_type not in schemas.EVENT_SCHEMAS:
        raise InvalidEvent(f"{event_type!r} is not a known event type: known are "
                           f"{', '.join(sorted(schemas.EVENT_SCHEMAS))}", field="event_type")
    name = schemas.EVENT_SCHEMAS[event_type]
    match = _VERSION.match(event.get("schema_version")) if isinstance(event.get("schema_version"), str) else None
    if match and f"{event_type}.v{match.group(1)}" in schemas.schema_names():
        name = f"{event_type}.v{match.group(1)}"
    if unpublished and _PUBLISHED_AT not in event:
        event = {**event, _PUBLISHED_AT: _PLACEHOLDER_TIME}
    _check(name, event, event_type)


def _check(name: str, event: Mapping[str, Any], event_type: str) -> None:
    if _fast_valid(name, event):
        return
    validator = schemas.validator(name)
    errors = list(validator.iter_errors(event))
    if not errors:
        return
    order = list(validator.schema.get("properties", {}))
    described = [_describe(error, event, validator.schema) for error in errors]

    def rank(item: tuple[str | None, str, ValidationError]) -> tuple:
        field, _, error = item
        top = (field or "").split(".")[0]
        return (order.index(top) if top in order else len(order), _KEYWORD_RANK.get(error.validator, 9))

    field, reason, _ = min(described, key=rank)
    more = len({d[0] for d in described}) - 1
    if more > 0:
        reason += f" (and {more} more field{'s' if more > 1 else ''} wrong)"
    raise InvalidEvent(reason, field=field, event_type=event_type)


def _fast_valid(name: str, event: Mapping[str, Any]) -> bool:
    """jsonschema-rs's "valid" (see :func:`schemas.fast_validator`); False leaves the verdict to jsonschema."""
    fast = schemas.fast_validator(name)
    if fast is None:
        return False
    try:
        return fast.is_valid(event)
    except Exception:  # noqa: BLE001 - what it cannot read as JSON (a tuple, a datetime, deep nesting): jsonschema says
        return False


def _describe(error: ValidationError, event: Mapping[str, Any],
              schema: Mapping[str, Any]) -> tuple[str | None, str, ValidationError]:
    path = [str(p) for p in error.absolute_path]
    instance = error.instance
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [name for name in error.validator_value if name not in instance]
        return ".".join(path + missing[:1]), "is missing (required)", error
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = set(error.schema.get("properties", {}))
        extra = sorted(name for name in instance if name not in known)
        where = f"{event.get('event_type')} {event.get('schema_version')}" if not path else ".".join(path)
        return ".".join(path + extra[:1]), f"is not a field of {where}: unknown fields are not allowed", error
    if error.validator in ("anyOf", "oneOf") and error.context:
        # e.g. door_id: an id or null; a string that is no id is best told what an id looks like
        typed = [sub for sub in error.context if sub.validator != "type"]
        if typed:
            field, reason, _ = _describe(typed[0], event, schema)
            return field, reason, error
    field = ".".join(path) or None
    if error.validator in ("format", "pattern") and error.schema.get("title"):
        # a value of a shared kind (timestamp, UUID, id): name the kind and show an example
        title = error.schema["title"]
        title = title if title[1:2].isupper() else title[:1].lower() + title[1:]
        reason = f"{instance!r} is not a valid {title}"
        if error.schema.get("examples"):
            reason += f", e.g. {error.schema['examples'][0]!r}"
    else:
        reason = error.message
    rule = _rule(error, schema)
    if rule:
        reason += f" ({rule})"
    return field, reason, error


def _rule(error: ValidationError, schema: Mapping[str, Any]) -> str | None:
    """The description of the allOf rule (if/then) an error comes from, if it comes from one."""
    steps = list(error.schema_path)
    if len(steps) >= 2 and steps[0] == "allOf" and isinstance(steps[1], int):
        rules = schema.get("allOf", [])
        if steps[1] < len(rules):
            description = rules[steps[1]].get("description")
            return description.rstrip(".") if isinstance(description, str) else None
    return None


# ---------------------------------------------------------------------------------- wire format
def encode(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept, no NaN). Does not validate: see :func:`validate`."""
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"cannot be written as JSON: {exc}", event_type=event.get("event_type")) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode(topic: str, data: bytes | bytearray | memoryview | None) -> dict[str, Any]:
    """The event in a message's value, validated; :class:`MalformedEvent` when a consumer cannot use it.

    ``topic`` is where the message came from: when its name ends in ``.v<N>`` the event's major version
    must be N. A newer minor version than this reader knows may carry unknown top-level fields, which
    are dropped (see the compatibility rules in the schema's description).
    """
    if data is None:
        raise MalformedEvent("empty message (no value)", topic=topic)
    try:
        event = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"not UTF-8 text: {exc}", topic=topic) from None
    except ValueError as exc:  # JSONDecodeError is one
        raise MalformedEvent(f"not JSON: {exc}", topic=topic) from None
    if not isinstance(event, dict):
        raise MalformedEvent(f"not a JSON object but {type(event).__name__}", topic=topic)
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or event_type not in schemas.EVENT_SCHEMAS:
        raise MalformedEvent(f"{event_type!r} is not a known event type: known are "
                             f"{', '.join(sorted(schemas.EVENT_SCHEMAS))}", topic=topic, field="event_type")
    version = event.get("schema_version")
    match = _VERSION.match(version) if isinstance(version, str) else None
    if not match:
        raise MalformedEvent(f"{version!r} is not a 'MAJOR.MINOR' version", topic=topic, field="schema_version",
                             event_type=event_type)
    major, minor = int(match.group(1)), int(match.group(2))
    on_topic = _TOPIC_MAJOR.search(topic or "")
    if on_topic and int(on_topic.group(1)) != major:
        raise MalformedEvent(f"version {version} on a .v{on_topic.group(1)} topic: a topic carries one major "
                             "version only", topic=topic, field="schema_version", event_type=event_type)
    name = f"{event_type}.v{major}"
    if name not in schemas.schema_names():
        raise MalformedEvent(f"version {version}: this reader knows {event_type} "
                             f"{schemas.SCHEMA_VERSIONS[event_type]} and older only", topic=topic,
                             field="schema_version", event_type=event_type)
    schema = schemas.validator(name).schema
    known_minor = int(_VERSION.match(schema["properties"]["schema_version"]["default"]).group(2))
    if minor > known_minor:
        known = set(schema.get("properties", {}))
        event = {k: v for k, v in event.items() if k in known}
    try:
        _check(name, event, event_type)
    except InvalidEvent as exc:
        raise MalformedEvent(exc.reason, topic=topic, field=exc.field, event_type=event_type) from None
    return event


def fields_of(event_type: str) -> Iterable[str]:
    """Every field an event of this type may carry (the newest schema's properties), in schema order."""
    return tuple(schemas.validator(schema_name(event_type)).schema.get("properties", {}))
