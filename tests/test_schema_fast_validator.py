"""jsonschema-rs as the contract's fast "valid" (schemas.fast_validator): an event it takes must be one
jsonschema takes, so schemas.events.validate gives the same verdict as jsonschema alone on anything.

Checked on events of the types built or read at stream rates (recognition, presence, attendance, dead letter)
with one thing wrong (hypothesis): a field, nested or not, replaced by a wild value, removed, or one added."""

from __future__ import annotations

import copy
import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from consumers.dead_letters import dead_letter_event
from consumers.housekeeping import attendance_event
from consumers.records import DeadLetter
from infra.scenario.synthetic import presence_event, recognition_event
from schemas import events
from schemas.events import InvalidEvent

NOW = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.timezone.utc).timestamp()
ATTENDANCE_PAYLOAD = {
    "change": "recorded", "session_id": 12, "course_id": "C001", "room_id": "R001",
    "session_starts_at": "2026-12-05T09:00:00Z", "session_ends_at": "2026-12-05T10:00:00Z", "final": False,
    "person_id": "p001-01", "status": "present", "unconfirmed": False, "first_seen": "2026-12-05T09:01:00Z",
    "last_seen": "2026-12-05T09:40:00Z", "presence_s": 2340.5,
    "evidence_event_ids": ["0b7f1d7e-4c1a-4a55-9d0e-6f1f3c1d2a10", "5f0c2a0e-9a7b-4d0a-8f5e-2b1c3d4e5f60"],
    "evidence": {"door_recognitions": 1, "first_door_at": "2026-12-05T09:00:40Z", "room_tracks": 2,
                 "room_face": True},
    "changed_at": "2026-12-05T09:40:01Z"}


def _samples() -> list[dict]:
    attendance = attendance_event(uuid.uuid4(), dict(ATTENDANCE_PAYLOAD))
    attendance["published_at"] = "2026-12-05T09:40:02Z"
    return [
        recognition_event(room_id="A101", camera_id="door-a101", track_id="door-a101-7", person_id="macron",
                          frame_time=NOW),
        presence_event(kind="update", room_id="A101", camera_id="room-a101", track_id="room-a101-3",
                       person_id="macron", frame_time=NOW, first_seen=NOW - 60,
                       recognition_event_id=str(uuid.uuid4())),
        presence_event(kind="enter", room_id="A101", camera_id="room-a101", track_id="room-a101-4",
                       person_id=None, frame_time=NOW, first_seen=NOW),
        attendance,
        dead_letter_event(DeadLetter("rollcall.presence.v1", 3, 1234, b"cam", b"{not json", "not JSON"),
                          "rollcall-attendance"),
    ]


SAMPLES = _samples()
WILD = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.integers(max_value=-2**63),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from([
        "", "a\x00b", "A101\n", " A101", "x" * 65, "é", "\ud800",
        "2026-02-30T09:00:00Z", "2026-02-29T09:00:00Z", "2028-02-29T09:00:00Z", "2026-12-31T23:59:60Z",
        "2026-12-05T09:00:00", "2026-12-05T09:00:00+01:00", "2026-12-05T09:00:00.1234567891Z",
        "2026-12-05T09:00:00z", "2026-12-05T09:00:00Z\n", "2026-12-05 09:00:00Z", "0000-01-01T00:00:00Z",
        "0B7F1D7E-4C1A-4A55-9D0E-6F1F3C1D2A10", "{0b7f1d7e-4c1a-4a55-9d0e-6f1f3c1d2a10}",
        "0b7f1d7e4c1a4a559d0e6f1f3c1d2a10", "urn:uuid:0b7f1d7e-4c1a-4a55-9d0e-6f1f3c1d2a10",
        "0b7f1d7e-4c1a-4a55-9d0e-6f1f3c1d2a10\n", "0b7f1d7e-4c1a-4a55-9d0e-6f1f3c1d2a1g",
        "known", "unknown", "present", "absent", "enter", "handoff", "1.0", "1.9", "2.0"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(12.0), st.just(-1), st.just(0), st.just(1e308))


def _paths(node, prefix=()):
    """Every key path of a nested event (dicts and lists)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


@st.composite
def nearly_valid(draw) -> tuple[str, dict]:
    """(the schema of the event it was made from, the event with one thing wrong)"""
    event = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    name = f"{event['event_type']}.v1"
    path = draw(st.sampled_from(sorted(_paths(event), key=repr)))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    how = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
    if how == "replace":
        parent[path[-1]] = draw(WILD)
    elif how == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["extra", "Event_id", "score ", "gaze_deg"]))] = draw(WILD)
    return name, event


def _jsonschema_takes(name: str, event: dict) -> bool:
    return schemas.validator(name).is_valid(event)


def _validate_takes(event: dict) -> bool:
    try:
        events.validate(event)
    except InvalidEvent:
        return False
    return True


def test_every_sample_is_valid_for_both_validators():
    for event in SAMPLES:
        name = f"{event['event_type']}.v1"
        assert schemas.validator(name).is_valid(event), name
        assert schemas.fast_validator(name).is_valid(event), name


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nearly_valid())
def test_what_jsonschema_rs_takes_jsonschema_takes_and_validate_agrees_with_jsonschema(sample):
    name, event = sample
    try:
        fast_takes = schemas.fast_validator(name).is_valid(event)
    except Exception:  # noqa: BLE001 - what it cannot read: validate leaves that to jsonschema
        fast_takes = False
    if fast_takes:
        assert _jsonschema_takes(name, event)
    assert _validate_takes(event) == _jsonschema_takes(name, event)


@pytest.mark.parametrize("value, valid", [
    ("2026-02-28T09:00:00Z", True), ("2028-02-29T09:00:00Z", True), ("2026-02-29T09:00:00Z", False),
    ("2026-04-31T09:00:00Z", False), ("2026-12-05T09:00:00.123456789Z", True), ("2026-12-05T09:00:00+00:00", False),
])
def test_a_calendar_date_is_checked_by_the_fast_path_too(value, valid):
    event = copy.deepcopy(SAMPLES[1])
    event["frame_time"] = value
    assert schemas.fast_validator("presence.v1").is_valid(event) is valid
    assert _validate_takes(event) is valid


def test_a_valid_event_never_reaches_jsonschema_and_a_wrong_one_is_named_by_it(monkeypatch):
    calls = []
    real = schemas.validator
    monkeypatch.setattr(schemas, "validator", lambda name: calls.append(name) or real(name))
    for event in SAMPLES:
        events.validate(event)
    assert calls == []  # jsonschema (~200 µs an event) only for what jsonschema-rs refuses
    with pytest.raises(InvalidEvent) as caught:
        events.validate({**SAMPLES[1], "camera_id": "room a101"})
    assert caught.value.field == "camera_id" and calls == ["presence.v1"]
