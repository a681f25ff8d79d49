"""The presence event contract (schemas/presence.v1.json)."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

import schemas
from schemas import events
from schemas.events import InvalidEvent, MalformedEvent

TOPIC = "rollcall.presence.v1"

VALID = {
    "event_id": "0b8f2a9e-5c1d-4e57-9a53-2f6f0e4c1b7d",
    "event_type": "presence",
    "schema_version": "1.0",
    "published_at": "2026-11-22T09:14:05.000Z",
    "kind": "enter",
    "room_id": "a101",
    "camera_id": "room-a101",
    "track_id": "17",
    "identity": "known",
    "person_id": "s1234",
    "identity_source": "handoff",
    "handoff": {"door_id": "door-a101", "recognition_event_id": "5a1c2b3d-0e4f-4a5b-8c6d-7e8f9a0b1c2d",
                "transit_s": 4.2},
    "ambiguous": False,
    "previous_person_id": None,
    "frame_time": "2026-11-22T09:14:03.250Z",
    "first_seen": "2026-11-22T09:14:01.000Z",
    "last_seen": "2026-11-22T09:14:03.250Z",
    "dwell_s": 2.25,
    "box": {"x1": 100.0, "y1": 50.0, "x2": 180.0, "y2": 300.0},
    "frame_size": {"width": 1280, "height": 720},
}

UNKNOWN = {**VALID, "identity": "unknown", "person_id": None, "identity_source": "none", "handoff": None}


def errors(event) -> list:
    return list(schemas.validator("presence.v1").iter_errors(event))


def test_schema_file_shape():
    schema = schemas.load_schema("presence.v1")
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/presence.v1.json") and schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])  # v1.0: every field is required
    assert {"event_id", "event_type", "schema_version", "published_at", "kind", "room_id", "camera_id",
            "track_id", "identity", "person_id", "identity_source", "handoff", "ambiguous",
            "previous_person_id", "frame_time", "first_seen", "last_seen", "dwell_s", "box",
            "frame_size"} == set(schema["properties"])
    for key, part in schema["properties"].items():
        assert part.get("title") and part.get("description"), key
    assert schemas.EVENT_SCHEMAS["presence"] == "presence.v1" and schemas.SCHEMA_VERSIONS["presence"] == "1.0"


@pytest.mark.parametrize("event", [
    VALID,
    UNKNOWN,
    {**UNKNOWN, "ambiguous": True},
    {**VALID, "identity": "unknown", "person_id": None},  # a visitor recognised as unknown, handed off
    {**VALID, "kind": "identity", "previous_person_id": "s9999"},
    {**VALID, "kind": "exit", "identity_source": "reacquired", "handoff": None},
    {**VALID, "kind": "update", "identity_source": "face", "handoff": None, "dwell_s": 0},
])
def test_valid_events(event):
    assert errors(event) == []
    events.validate(event)


@pytest.mark.parametrize("change, field", [
    ({"kind": "left"}, "kind"),
    ({"event_type": "presense"}, "event_type"),
    ({"identity": "known", "person_id": None}, "person_id"),
    ({"identity": "unknown"}, "person_id"),
    ({"identity_source": "magic"}, "identity_source"),
    ({"identity_source": "handoff", "handoff": None}, "handoff"),
    ({"identity_source": "face"}, "handoff"),  # a handoff object needs source 'handoff'
    ({"identity_source": "none", "handoff": None}, "identity_source"),  # known needs a source
    ({"ambiguous": True}, "identity"),  # ambiguous means unknown
    ({"ambiguous": "no"}, "ambiguous"),
    ({"previous_person_id": "s9"}, "previous_person_id"),  # only for kind 'identity'
    ({"dwell_s": -1}, "dwell_s"),
    ({"handoff": {"door_id": "door-a101", "recognition_event_id": "nope", "transit_s": 1}},
     "handoff"),
    ({"handoff": {"door_id": "door-a101", "transit_s": 1}}, "handoff"),
    ({"handoff": {**VALID["handoff"], "extra": 1}}, "handoff"),
    ({"handoff": {**VALID["handoff"], "transit_s": -0.5}}, "handoff"),
    ({"first_seen": "2026-11-22 09:14:01"}, "first_seen"),
    ({"schema_version": "2.0"}, "schema_version"),
    ({"box": {"x1": 1, "y1": 2, "x2": 3}}, "box.y2"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_events(change, field):
    event = {**copy.deepcopy(VALID), **change}
    assert errors(event)
    with pytest.raises(InvalidEvent) as caught:
        events.validate(event)
    assert caught.value.field is not None and caught.value.field.split(".")[0] == field.split(".")[0]


@pytest.mark.parametrize("missing", ["kind", "handoff", "ambiguous", "previous_person_id", "dwell_s"])
def test_missing_field_is_invalid(missing):
    event = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(InvalidEvent) as caught:
        events.validate(event)
    assert caught.value.field == missing


def test_build_encode_decode_round_trip():
    fields = {k: v for k, v in VALID.items() if k not in ("event_id", "event_type", "schema_version",
                                                           "published_at")}
    fields.update(first_seen=1795338841.0, box=(100.0, 50.0, 180.0, 300.0), frame_size=(1280, 720))
    event = events.build_event("presence", fields)
    assert event["first_seen"] == "2026-11-22T09:14:01.000Z" and event["box"]["x2"] == 180.0
    assert event["schema_version"] == "1.0" and "published_at" not in event
    published = {**event, "published_at": "2026-11-22T09:14:05.000Z"}
    assert events.decode(TOPIC, events.encode(published)) == published


def test_decode_rejects_violations_and_drops_unknown_fields_of_a_newer_minor():
    with pytest.raises(MalformedEvent) as caught:
        events.decode(TOPIC, events.encode({**VALID, "kind": "left"}))
    assert caught.value.field == "kind"
    with pytest.raises(MalformedEvent, match="version 2.0 on a .v1 topic"):
        events.decode(TOPIC, events.encode({**VALID, "schema_version": "2.0"}))
    newer = {**VALID, "schema_version": "1.3", "zone": "front"}
    assert "zone" not in events.decode(TOPIC, events.encode(newer))
