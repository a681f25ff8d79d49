"""Property-based fuzzing of the attendance writer (hypothesis) on the real broker and PostgreSQL: thousands
of generated messages, valid, nearly valid (one field wrong, missing, extra, extreme) and hostile (deep
nesting, huge strings, NUL, unpaired surrogates, extreme timestamps, wrong types, not JSON, not UTF-8,
duplicate keys, no value), at `rollcall attendance writer` running as operators run it (a subprocess).

The properties, per generated batch: the writer never stops and never pauses (no outage here, so no
"batch not written" line and no traceback); every message is accounted for: stored (presence_event at its
position), dead-lettered (a dead letter naming its position), a duplicate of a stored event, or an unknown
face (valid, proves nobody's attendance); never both stored and dead-lettered; every valid message is
stored. After the fuzzing, a whole class's good events are all stored and make attendance."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infra.scenario.synthetic import classroom
from schemas.events import MalformedEvent, decode, encode
from tests.test_writer_kit import (ROSTER, SESSION_START, attendance_snapshot, create_topics, encoded, end_offsets,
                                   prepare_database, stored_offsets_reach, wait_until, write_config_file,
                                   writer_config, writer_raw_config)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
ROLLCALL = Path(sys.executable).with_name("rollcall")
EXAMPLES = int(os.environ.get("ROLLCALL_FUZZ_EXAMPLES", "30"))
PRESENCE_SAMPLE, RECOGNITION_SAMPLE = (s.messages[0][1] for s in classroom(
    room_id="A101", start=SESSION_START, minutes=90, people=ROSTER[:3], visitors=0, seed=1, update_s=60.0))


# ------------------------------------------------------------------------------------ strategies
def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@st.composite
def valid_events(draw) -> tuple[str, dict]:
    """A valid presence or known-face recognition event within the session (kind: 'presence'/'recognition')."""
    kind = draw(st.sampled_from(["presence", "presence", "recognition"]))
    event = copy.deepcopy(PRESENCE_SAMPLE if kind == "presence" else RECOGNITION_SAMPLE)
    first = SESSION_START + dt.timedelta(seconds=draw(st.integers(-600, 5400)))
    last = first + dt.timedelta(seconds=draw(st.integers(0, 1800)))
    event.update(event_id=str(uuid.uuid4()), person_id=draw(st.sampled_from(ROSTER)), identity="known",
                 first_seen=_stamp(first), last_seen=_stamp(last), frame_time=_stamp(last),
                 track_id=f"{event['camera_id']}-fz-{draw(st.integers(0, 50))}")
    if kind == "presence":
        event["kind"] = draw(st.sampled_from(["enter", "update", "exit"]))
    return kind, event


_TIMES = st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "1970-01-01T00:00:00Z",
                          "2026-02-30T09:00:00Z", "2026-11-02T25:00:00Z", "2026-11-02 09:00:00", "2031-01-01T00:00:00Z",
                          "2025-06-02T09:00:00Z", "2026-11-02T09:00:00+01:00", ""])
_WILD = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30), st.floats(allow_nan=True),
    st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["a\x00b", "\x00", "room-\ud800", "\udfff", "A101\n", " A101", "é" * 129, "x" * 129]),
    st.integers(1, 300_000).map(lambda n: "x" * n), _TIMES, st.lists(st.integers(), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(50, 800).map(lambda n: json.loads("[" * n + "]" * n)))


@st.composite
def nearly_valid(draw) -> dict:
    """A valid event with one thing wrong: a field replaced by a wild value, removed, or added."""
    _, event = draw(valid_events())
    field = draw(st.sampled_from(sorted(event)))
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "times"]))
    if action == "replace":
        event[field] = draw(_WILD)
    elif action == "delete":
        del event[field]
    elif action == "add":
        event[draw(st.text(min_size=1, max_size=10))] = draw(_WILD)
    else:
        event["first_seen"] = event["frame_time"] = event["last_seen"] = draw(_TIMES)
    return event


def _dump(event: dict, ascii_only: bool) -> bytes:
    return json.dumps(event, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


_HOSTILE = st.one_of(
    st.integers(100, 20_000).map(lambda n: b"[" * n),
    st.integers(100, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=300), st.just(b""), st.just(b"null"), st.just(b"[]"), st.just(b'"text"'),
    st.just(b"\xff\xfe\x00\x00"), st.just(b'{"schema_version": NaN}'), st.just(b"1e400"),
    st.just(b"9" * 5000), st.integers(600_000, 900_000).map(lambda n: b"\x80" * n),
    st.just(b'{"event_type": "presence", "event_type": "recognition", "schema_version": "1.0"}'))


@st.composite
def messages(draw) -> tuple[str, str, bytes | None]:
    """(what it is, topic kind, value): 'valid', 'nearly' or 'hostile'."""
    what = draw(st.sampled_from(["valid", "valid", "valid", "nearly", "nearly", "hostile", "duplicate_keys", "none"]))
    if what == "valid":
        kind, event = draw(valid_events())
        return "valid", kind, _dump(event, draw(st.booleans()))
    topic = draw(st.sampled_from(["presence", "recognition"]))
    if what == "nearly":
        return "nearly", topic, _dump(draw(nearly_valid()), draw(st.booleans()))
    if what == "duplicate_keys":  # a valid event whose one field comes twice: JSON parsers disagree on which wins
        _, event = draw(valid_events())
        field = draw(st.sampled_from(sorted(event)))
        text = _dump(event, True)[:-1] + b"," + json.dumps({field: draw(_WILD)})[1:].encode("utf-8", "surrogatepass")
        return "nearly", topic, text
    if what == "none":
        return "hostile", topic, None
    return "hostile", topic, draw(_HOSTILE)


# ------------------------------------------------------------------------------------- the checks
async def _produce(bootstrap: str, items: list[tuple[str, bytes | None]]) -> list[tuple[str, int, int]]:
    """Send (topic, value) in order; each message's (topic, partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        # keyed by content: an event sent again (a publisher retry) goes to the same partition, later
        futures = [await producer.send(topic, key=b"fuzz-%d" % (zlib.crc32(value or b"") % 7), value=value)
                   for topic, value in items]
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def _dead_letter_positions(bootstrap: str, topic: str, start: dict) -> set[tuple[str, int, int]]:
    """Source positions of the dead letters after ``start`` ({partition: offset}); ``start`` moves to the end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=64 << 20,
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start.get(tp.partition, 0))
        found: set[tuple[str, int, int]] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for r in records:
                    letter = json.loads(r.value)
                    found.add((letter["source_topic"], letter["source_partition"], letter["source_offset"]))
                    start[tp.partition] = r.offset + 1
            if all(consumer.highwater(tp) is not None and start.get(tp.partition, 0) >= consumer.highwater(tp)
                   for tp in parts):
                return found
        raise AssertionError("dead-letter topic not read to its end")
    finally:
        await consumer.stop()


def _ignorable(topic: str, value: bytes | None) -> bool:
    """A valid unknown-face recognition: the writer stores nothing for it, by design."""
    try:
        event = decode(topic, value)
    except (MalformedEvent, RecursionError, ValueError):
        return False
    return event.get("event_type") == "recognition" and event.get("person_id") is None


def _event_id(value: bytes | None) -> str | None:
    try:
        event = json.loads(value)
    except (RecursionError, ValueError, TypeError):
        return None
    return event.get("event_id") if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None


class Fuzz:
    def __init__(self, config, url: str, bootstrap: str, writer: subprocess.Popen, log: Path):
        self.config, self.url, self.bootstrap, self.writer, self.log = config, url, bootstrap, writer, log
        topics = config.kafka.topics
        self.topics = {"presence": topics.presence.name, "recognition": topics.recognitions.name}
        self.dead_start: dict[int, int] = {}
        self.total = 0
        self.outcomes = {"stored": 0, "dead_letter": 0, "duplicate": 0, "unknown_face": 0}

    async def check(self, batch: list[tuple[str, str, bytes | None]]) -> None:
        items = [(self.topics[kind], value) for _, kind, value in batch]
        positions = await _produce(self.bootstrap, items)
        ends: dict[tuple[str, int], int] = {}
        for topic, partition, offset in positions:
            ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
        await wait_until(lambda: self._progress(ends), 90, "the writer to store or dead-letter the batch")
        dead = await _dead_letter_positions(self.bootstrap, self.config.kafka.topics.dead_letter.name,
                                            self.dead_start)
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch("SELECT topic, kafka_partition, kafka_offset, event_id::text FROM presence_event")
        finally:
            await conn.close()
        stored = {(r["topic"], r["kafka_partition"], r["kafka_offset"]) for r in rows}
        stored_ids = {r["event_id"] for r in rows}
        for (what, _, value), position, (topic, _) in zip(batch, positions, items):
            is_stored, is_dead = position in stored, position in dead
            assert not (is_stored and is_dead), f"{position} both stored and dead-lettered: {value[:200]!r}"
            if is_stored or is_dead:
                self.outcomes["stored" if is_stored else "dead_letter"] += 1
            elif _event_id(value) in stored_ids:
                self.outcomes["duplicate"] += 1
            elif _ignorable(topic, value):
                self.outcomes["unknown_face"] += 1
            else:
                raise AssertionError(f"{what} message at {position} neither stored nor dead-lettered: {value[:300]!r}")
            if what == "valid":
                assert is_stored, f"a valid event at {position} was not stored: {value!r}"
        self.total += len(batch)
        self.assert_running()

    async def _progress(self, ends) -> bool:
        self.assert_running()
        return await stored_offsets_reach(self.url, self.config.attendance.group_id, ends)

    def assert_running(self) -> None:
        log = self.log.read_text(errors="replace")
        assert self.writer.poll() is None, f"the writer stopped: {log[-3000:]}"
        assert "Traceback" not in log and "batch not written" not in log, log[-3000:]


def test_fuzzed_messages_never_stop_the_writer_and_each_is_stored_or_dead_lettered(stack, fresh_database, tmp_path,
                                                                                  record_property):
    bootstrap = stack.kafka_bootstrap_servers
    raw = writer_raw_config(max_batch=500)
    config = writer_config(raw["attendance"]["group_id"].removeprefix("writer-"), max_batch=500)
    config_path = write_config_file(tmp_path / "rollcall.toml", raw)
    log = tmp_path / "writer.log"
    asyncio.run(prepare_database(fresh_database, config))
    asyncio.run(create_topics(bootstrap, config))
    env = {**os.environ, "DATABASE_URL": fresh_database, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    writer = subprocess.Popen([str(ROLLCALL), "--config", str(config_path), "attendance", "writer"], env=env,
                              stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
    fuzz = Fuzz(config, fresh_database, bootstrap, writer, log)
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
              suppress_health_check=list(HealthCheck))
    @given(st.lists(messages(), min_size=250, max_size=400), st.integers(0, 30))
    def fuzz_batch(batch, repeats):
        # a publisher retry sends an event again: the first valid ones once more, at the end
        again = [("duplicate", kind, value) for what, kind, value in batch if what == "valid"][:repeats]
        asyncio.run(fuzz.check(batch + again))

    try:
        fuzz_batch()
        # good events after all that: a whole class, stored and made into attendance
        presence, recognitions = classroom(room_id="A101", start=SESSION_START, minutes=90, people=ROSTER[:3],
                                           visitors=1, seed=99, update_s=60.0, check=True)
        good = [("valid", "presence", v) for _, v in encoded(presence)]
        good += [("valid" if e["person_id"] else "unknown face", "recognition", encode(e))
                 for _, e in recognitions.messages]
        asyncio.run(fuzz.check(good))
        people = {row[3] for row in asyncio.run(attendance_snapshot(fresh_database))}
        assert set(ROSTER[:3]) <= people
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {fuzz.total} messages in {EXAMPLES} generated batches + 1 good class, {elapsed:.0f} s: "
          f"{fuzz.outcomes}")
    record_property("fuzz_messages", fuzz.total)
    record_property("fuzz_outcomes", json.dumps(fuzz.outcomes))
    assert fuzz.total >= 250 * EXAMPLES and fuzz.outcomes["duplicate"] > 0
    assert fuzz.outcomes["stored"] > 70 * EXAMPLES and fuzz.outcomes["dead_letter"] > 40 * EXAMPLES
