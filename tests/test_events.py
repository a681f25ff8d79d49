"""The event contract: the schema files in schemas/ and schemas.events (build, validate, encode, decode)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from jsonschema import Draft202012Validator

import schemas
from schemas import events
from schemas.events import InvalidEvent, MalformedEvent
from processor.appearance import Appearance

TOPIC = "rollcall.recognitions.v1"


def fields(**changes) -> dict:
    base = dict(camera_id="door-a101", room_id="A101", door_id="A101-main", track_id="door-a101-1-7",
                person_id="macron", score=0.71, margin=0.22, quality=0.83, frames=6,
                frame_time=dt.datetime(2026, 11, 22, 9, 14, 3, 250000, tzinfo=dt.timezone.utc),
                first_seen=1795338842.5, last_seen="2026-11-22T09:14:04.100Z",
                box=(612.0, 188.5, 701.0, 297.0), frame_size=(1280, 720), model_pack="open")
    base.update(changes)
    return base


def published(**changes) -> dict:
    """A complete event as it is on the wire (published_at set)."""
    event = events.recognition_event(**fields())
    event["published_at"] = "2026-11-22T09:14:04.180Z"
    event.update(changes)
    return event


def field_of(event, unpublished: bool = False) -> str | None:
    with pytest.raises(InvalidEvent) as caught:
        events.validate(event, unpublished=unpublished)
    assert caught.value.field is None or caught.value.field.split(".")[0] in str(caught.value)
    return caught.value.field


# --------------------------------------------------------------------------------- schema files
def test_schema_files_are_valid_draft_2020_12_with_id_title_description_everywhere():
    assert set(schemas.schema_names()) >= {"common.v1", "recognition.v1"}
    for name in schemas.schema_names():
        schema = schemas.load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(f"/{name}.json")
        assert schema["title"] and schema["description"]
        parts = list(schema.get("properties", {}).items()) + list(schema.get("$defs", {}).items())
        for key, part in parts:
            assert part.get("title") and part.get("description"), f"{name}: {key} needs a title and description"


def test_recognition_schema_shape():
    schema = schemas.load_schema("recognition.v1")
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - set(schema["required"]) == {"appearance", "side", "liveness"}  # optional (1.1, 1.2)
    assert {"event_id", "event_type", "schema_version", "published_at", "camera_id", "room_id", "door_id",
            "track_id", "identity", "person_id", "score", "margin", "quality", "frames", "frame_time",
            "first_seen", "last_seen", "box", "frame_size", "model_pack"} == set(schema["required"])
    assert "MINOR" in schema["description"] and "optional field" in schema["description"]
    assert schemas.SCHEMA_VERSIONS["recognition"] == "1.2"
    assert schemas.EVENT_SCHEMAS["recognition"] == "recognition.v1"
    assert events.required_fields("recognition") == tuple(schema["required"])


def test_load_schema_is_a_copy_and_validator_is_cached():
    schemas.load_schema("recognition.v1")["required"].clear()
    assert schemas.load_schema("recognition.v1.json")["required"]
    assert schemas.validator("recognition.v1") is schemas.validator("recognition.v1.json")
    with pytest.raises(KeyError, match="known are"):
        schemas.load_schema("nothing.v1")


def test_format_checker_really_checks_uuid_and_date_time():
    checker = schemas.validator("recognition.v1").format_checker
    assert checker.conforms(str(uuid.uuid4()), "uuid") and not checker.conforms("not-a-uuid", "uuid")
    assert checker.conforms("2026-11-22T09:14:03.250Z", "date-time")
    assert checker.conforms("2026-11-22T09:14:03.123456789Z", "date-time")
    for bad in ("2026-02-30T00:00:00Z", "2026-11-22 09:14:03Z", "2026-11-22T09:14:03", "yesterday",
                "2026-11-22T09:14:03+01:00"):
        assert not checker.conforms(bad, "date-time"), bad


# ------------------------------------------------------------------------------------ building
def test_recognition_event_builds_a_valid_event():
    event = events.recognition_event(**fields())
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["event_type"] == "recognition" and event["schema_version"] == "1.2"
    assert event["identity"] == "known" and "published_at" not in event
    assert event["frame_time"] == "2026-11-22T09:14:03.250Z"
    assert event["first_seen"] == "2026-11-22T09:14:02.500Z"  # from Unix seconds
    assert event["box"] == {"x1": 612.0, "y1": 188.5, "x2": 701.0, "y2": 297.0}
    assert event["frame_size"] == {"width": 1280, "height": 720}
    events.validate(event, unpublished=True)
    with pytest.raises(InvalidEvent, match="published_at"):
        events.validate(event)  # on the wire it must carry published_at
    events.validate(published())

    unknown = events.recognition_event(**fields(person_id=None, score=0.31))
    assert unknown["identity"] == "unknown" and unknown["person_id"] is None
    assert events.recognition_event(**fields())["event_id"] != event["event_id"]


def test_recognition_event_converts_numpy_scalars():
    np = pytest.importorskip("numpy")
    event = events.recognition_event(**fields(score=np.float32(0.5), frames=np.int64(3),
                                              box=tuple(np.array([1, 2, 3, 4], dtype=np.float32))))
    assert type(event["score"]) is float and type(event["frames"]) is int and event["box"]["x2"] == 3.0
    json.loads(events.encode(event))


@pytest.mark.parametrize("missing", [f for f in events.required_fields("recognition")
                                     if f not in ("event_id", "event_type", "schema_version", "published_at",
                                                  "identity")])
def test_recognition_event_names_a_missing_field(missing):
    given = fields()
    del given[missing]
    with pytest.raises(InvalidEvent) as caught:
        events.recognition_event(**given)
    assert caught.value.field == missing and repr(missing) in str(caught.value)


def test_recognition_event_rejects_naive_datetimes_and_fixed_fields():
    with pytest.raises(InvalidEvent, match="frame_time.*no time zone"):
        events.recognition_event(**fields(frame_time=dt.datetime(2026, 11, 22, 9, 0)))
    with pytest.raises(InvalidEvent, match="schema_version"):
        events.recognition_event(**fields(schema_version="1.7"))
    with pytest.raises(InvalidEvent, match="'extra'"):
        events.recognition_event(**fields(extra=1))


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("missing", events.required_fields("recognition"))
def test_each_missing_required_field_is_named(missing):
    event = published()
    del event[missing]
    assert field_of(event) == missing


@pytest.mark.parametrize("name, value, expect", [
    ("score", "high", "score"),
    ("score", 1.5, "score"),
    ("margin", -0.1, "margin"),
    ("quality", 1.01, "quality"),
    ("frames", 1.5, "frames"),
    ("frames", 0, "frames"),
    ("identity", "maybe", "identity"),
    ("person_id", None, "person_id"),  # identity "known" needs a person
    ("camera_id", "door a101", "camera_id"),
    ("room_id", None, "room_id"),
    ("door_id", 7, "door_id"),
    ("door_id", "no spaces allowed", "door_id"),
    ("track_id", "", "track_id"),
    ("model_pack", 3, "model_pack"),
    ("event_type", "no-such-type", "event_type"),
    ("schema_version", "1", "schema_version"),
    ("schema_version", 1.0, "schema_version"),
    ("box", [1, 2, 3, 4], "box"),
    ("box", {"x1": 1, "y1": 2, "x2": "3", "y2": 4}, "box.x2"),
    ("box", {"x1": 1, "y1": 2, "x2": 3}, "box.y2"),
    ("box", {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "z": 0}, "box.z"),
    ("frame_size", {"width": 0, "height": 720}, "frame_size.width"),
])
def test_a_wrong_value_is_named(name, value, expect):
    assert field_of(published(**{name: value})) == expect


def test_unknown_identity_must_not_name_a_person():
    event = published(identity="unknown")
    with pytest.raises(InvalidEvent, match="person_id.*'unknown' requires person_id null"):
        events.validate(event)


def test_an_extra_top_level_field_is_named():
    with pytest.raises(InvalidEvent) as caught:
        events.validate(published(embedding=[0.1, 0.2]))
    assert caught.value.field == "embedding" and "not a field of recognition 1.2" in str(caught.value)


@pytest.mark.parametrize("name, value", [
    ("event_id", "not-a-uuid"),
    ("event_id", str(uuid.uuid4()).upper()),
    ("event_id", uuid.uuid4().hex),
    ("frame_time", "2026-11-22T09:14:03+01:00"),  # UTC only
    ("frame_time", "2026-11-22T09:14:03"),  # no zone
    ("first_seen", "2026-02-30T10:00:00Z"),  # no such day
    ("last_seen", "2026-11-22T24:00:00Z"),
    ("published_at", "22/11/2026 09:14"),
    ("published_at", 1795338842.5),
])
def test_a_bad_uuid_or_timestamp_is_named(name, value):
    with pytest.raises(InvalidEvent) as caught:
        events.validate(published(**{name: value}))
    assert caught.value.field == name
    assert ("UUID" in str(caught.value) or "uuid" in str(caught.value) or "event id" in str(caught.value)
            if name == "event_id" else "timestamp" in str(caught.value) or "type" in str(caught.value))


def test_validate_rejects_what_is_not_an_event():
    for thing in (None, [], "event", {"event_type": "nonsense"}):
        with pytest.raises(InvalidEvent):
            events.validate(thing)


# ------------------------------------------------------------------------------ encode / decode
def test_encode_is_compact_utf8_and_decode_round_trips():
    event = published(camera_id="door-é".replace("é", "e"), track_id="piste-é")
    data = events.encode(event)
    assert b" " not in data and "piste-é".encode() in data
    assert events.decode(TOPIC, data) == event
    with pytest.raises(InvalidEvent, match="JSON"):
        events.encode({**event, "score": float("nan")})


@pytest.mark.parametrize("data, field, reason", [
    (b"\xff\xfe garbage", None, "not UTF-8"),
    (b"{not json", None, "not JSON"),
    (b"", None, "not JSON"),
    (None, None, "empty message"),
    (b"[1, 2]", None, "not a JSON object"),
    (b'{"score": NaN}', None, "not JSON"),
    (b'{"schema_version": "1.0"}', "event_type", "not a known event type"),
    (b'{"event_type": "no-such-type", "schema_version": "1.0"}', "event_type", "not a known event type"),
])
def test_decode_garbage_is_malformed(data, field, reason):
    with pytest.raises(MalformedEvent) as caught:
        events.decode(TOPIC, data)
    assert caught.value.field == field and reason in caught.value.reason and caught.value.topic == TOPIC


def test_decode_wrong_versions_are_malformed():
    with pytest.raises(MalformedEvent, match=r"version 2\.0 on a \.v1 topic") as caught:
        events.decode(TOPIC, events.encode(published(schema_version="2.0")))
    assert caught.value.field == "schema_version"
    with pytest.raises(MalformedEvent, match=r"knows recognition 1\.2 and older only"):
        events.decode("some-topic", events.encode(published(schema_version="2.0")))
    for version in ("1", "v1.0", "1.0.0", None, 1.0):
        with pytest.raises(MalformedEvent, match="MAJOR.MINOR"):
            events.decode(TOPIC, events.encode(published(schema_version=version)))


def test_decode_schema_violation_is_malformed_and_names_the_field():
    with pytest.raises(MalformedEvent) as caught:
        events.decode(TOPIC, events.encode(published(quality=7)))
    assert caught.value.field == "quality" and str(caught.value).startswith(f"{TOPIC}: recognition event: field")
    with pytest.raises(MalformedEvent, match="'surprise'"):  # same minor: unknown fields are errors
        events.decode(TOPIC, events.encode(published(surprise=1)))


def test_decode_a_newer_minor_drops_unknown_fields_but_checks_the_rest():
    newer = published(schema_version="1.4", gaze_deg=12.5)
    event = events.decode(TOPIC, events.encode(newer))
    assert "gaze_deg" not in event and event["schema_version"] == "1.4" and event["score"] == newer["score"]
    with pytest.raises(MalformedEvent, match="score"):
        events.decode(TOPIC, events.encode({**newer, "score": "high"}))


def test_validation_is_fast_enough_for_publish():
    import time

    event = events.recognition_event(**fields())
    started = time.perf_counter()
    for _ in range(200):
        events.validate(event, unpublished=True)
    per_event = (time.perf_counter() - started) / 200
    print(f"\nvalidate: {per_event * 1e6:.0f} µs per recognition event")
    assert per_event < 0.002


# --------------------------------------------------------------------- 1.1: appearance and side
def test_recognition_1_1_carries_an_optional_appearance_and_side():
    import numpy as np


    look = Appearance({"upper": np.full(19, 1 / 19, np.float32)}, (600.0, 300.0, 710.0, 470.0))
    event = events.recognition_event(**fields(appearance=look.to_event(), side="left"))
    assert event["schema_version"] == "1.2" and event["side"] == "left"
    assert event["appearance"]["kind"] == "hs-hist-v1" and len(event["appearance"]["upper"]) == 19
    assert event["appearance"]["box"] == {"x1": 600.0, "y1": 300.0, "x2": 710.0, "y2": 470.0}
    wire = {**event, "published_at": "2026-11-22T09:14:04.180Z"}
    assert Appearance.from_event(events.decode(TOPIC, events.encode(wire))["appearance"]) is not None
    # None leaves the optional fields out; a 1.0 event (without them) is still valid
    plain = events.recognition_event(**fields(appearance=None, side=None))
    assert "appearance" not in plain and "side" not in plain
    events.validate({**published(), "schema_version": "1.0"})
    with pytest.raises(InvalidEvent) as caught:
        events.recognition_event(**fields(side="middle"))
    assert caught.value.field == "side"
    with pytest.raises(InvalidEvent) as caught:
        events.recognition_event(**fields(appearance={"kind": "hs-hist-v1", "upper": [2.0]}))
    assert caught.value.field.startswith("appearance")



# ---------------------------------------------------------------------------- 1.2: liveness
def test_recognition_1_2_carries_an_optional_liveness_and_a_suspect_names_nobody():
    event = events.recognition_event(**fields(person_id=None, liveness={
        "decision": "suspect", "score": 0.12, "frames": 31, "pictured_person_id": "hanks"}))
    assert event["schema_version"] == "1.2" and event["identity"] == "unknown"
    assert event["liveness"] == {"decision": "suspect", "score": 0.12, "frames": 31, "pictured_person_id": "hanks"}
    live = events.recognition_event(**fields(liveness={"decision": "live", "score": 0.97}))
    assert live["identity"] == "known" and live["liveness"]["decision"] == "live"
    assert "liveness" not in events.recognition_event(**fields(liveness=None))
    # a 1.1 reader's view: a 1.1 event without it is still valid, and a suspect never carries an identity
    events.validate({**published(), "schema_version": "1.1"})
    with pytest.raises(InvalidEvent) as caught:
        events.recognition_event(**fields(liveness={"decision": "suspect", "score": 0.1}))
    assert caught.value.field == "identity"
    with pytest.raises(InvalidEvent) as caught:
        events.recognition_event(**fields(liveness={"decision": "maybe", "score": 0.1}))
    assert caught.value.field.startswith("liveness")
