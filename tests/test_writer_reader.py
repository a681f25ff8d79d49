"""The writer's message reader without a broker or a database: the msgspec decoding of the presence
fields (the fast path) takes exactly the messages the Python checks take, with the same rows, and refuses
with the same reasons (those come from the checks it falls back to); the pydantic-core parser gives the
same objects as json.loads or refuses. Generated with the fuzzing test's strategies (valid, nearly valid,
duplicate keys, hostile)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import records
from consumers.records import DeadLetter, MessageReader
from tests.test_writer_fuzz import PRESENCE_SAMPLE, messages

TOPICS = {"p": "presence", "r": "recognition"}
NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp()  # after every generated event


def _read_both(topic: str, value: bytes | None, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(the reader's outcome, the outcome of the Python checks alone) for one message."""
    fast, slow = MessageReader(TOPICS), MessageReader(TOPICS)
    fast.begin_batch(NOW)
    slow.begin_batch(NOW)
    got = fast.read(topic, 0, 7, b"k", value)
    with monkeypatch.context() as patched:
        patched.setattr(records, "_FIELDS", {})  # the Python checks only, as before the fast path
        want = slow.read(topic, 0, 7, b"k", value)
    return got, want


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=messages())
def test_the_fast_field_check_agrees_with_the_python_checks(message, monkeypatch):
    _, kind, value = message
    got, want = _read_both("p" if kind == "presence" else "r", value, monkeypatch)
    assert got == want


def _presence(**changes) -> bytes:
    event = copy.deepcopy(PRESENCE_SAMPLE)
    event.update(event_id=str(uuid.uuid4()), **changes)
    return json.dumps(event).encode()


def test_a_valid_presence_event_takes_the_fast_path():
    reader = MessageReader(TOPICS)
    reader.begin_batch(NOW)
    assert records._FIELDS["presence"][0](_presence()).event_type == "presence"  # no ValidationError
    event_id, row = reader.read("p", 0, 7, b"k", _presence(kind="update"))
    assert row[:2] == (event_id, "update") and row[-3:] == ("p", 0, 7) and not isinstance(row, DeadLetter)


_EDGE_CASES = {
    "valid": _presence(),
    "unknown kind": _presence(kind="bogus"),
    "id with a newline": _presence(room_id="A101\n"),
    "NUL in track": _presence(track_id="t\x00"),
    "long track": _presence(track_id="x" * 129),
    "known without person": _presence(identity="known", person_id=None),
    "unknown": _presence(identity="unknown", person_id=None),
    "bad handoff id": _presence(handoff={"recognition_event_id": "not-a-uuid"}),
    "handoff": _presence(handoff={"recognition_event_id": str(uuid.uuid4()), "transit_s": 3.0}),
    "no such date": _presence(frame_time="2026-02-30T09:00:00Z"),
    "future": _presence(frame_time="2031-01-01T00:00:00Z"),
    "major version 2": _presence(schema_version="2.0"),
    "wrong type": _presence(event_type="recognition"),
    "repeated key": _presence()[:-1] + b',"kind":"bogus"}',  # the last one counts, as json.loads has it
    "escaped lone surrogate": _presence()[:-1] + b',"note":"\\ud800"}',  # json.loads takes it, msgspec not
    "UTF-8 BOM": b"\xef\xbb\xbf" + _presence(),  # json.loads takes it
    "escaped key": _presence().replace(b'"kind"', b'"\\u006bind"'),
    "no value": None, "empty": b"", "array": b"[]", "empty object": b"{}",
    # what msgspec refuses and json.loads takes: the checks decide those
    "NaN elsewhere": _presence()[:-1] + b',"note":NaN}',
    "number out of range elsewhere": _presence()[:-1] + b',"note":1e400}',
    "deep nesting elsewhere": _presence()[:-1] + b',"note":' + b"[" * 3000 + b"]" * 3000 + b"}",
    "huge integer track": _presence(track_id=10 ** 40),
    "handoff not an object": _presence(handoff="x"),
    "non-ASCII room": _presence(room_id="A101é"),
    "schema version 1.10000": _presence(schema_version="1.10000"),
}


@pytest.mark.parametrize("value", list(_EDGE_CASES.values()), ids=list(_EDGE_CASES))
def test_edge_cases_read_as_the_python_checks_read_them(value, monkeypatch):
    got, want = _read_both("p", value, monkeypatch)
    assert got == want


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(st.binary(max_size=200), st.from_regex(rb'\A\{"a":.{0,40}\}\Z'),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                               max_size=4))
                       .map(lambda obj: json.dumps(obj).encode("utf-8", "surrogatepass"))))
def test_the_parser_gives_what_json_loads_gives(value):
    try:
        want = ("ok", json.loads(value))
    except Exception as exc:  # noqa: BLE001 - what json.loads raises is what the reader saw before
        want = ("error", type(exc))
    try:
        got = ("ok", records._parse(value))
    except Exception as exc:  # noqa: BLE001
        got = ("error", type(exc))
    if want[0] == "ok" and got[0] == "ok":
        assert json.dumps(got[1], sort_keys=True) == json.dumps(want[1], sort_keys=True)  # NaN-safe comparison
    else:
        assert got == want
