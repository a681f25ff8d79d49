"""Hostile messages at the attendance writer on the real broker and PostgreSQL: anything a message's content
can cause is that message's problem (dead-lettered with the reason, the writer moves on, the good messages
around it are stored); a broker that lost its log is noticed, recorded and read again from its beginning.

Each case here was verified to stop or stall the writer before the fix (see the issue): RecursionError on
deep nesting, OverflowError on year 9999/0001, a session for every timetable slot between two far-apart
events, NUL in an id (COPY refused: retried forever), a dead letter over the producer's size limit
(retried forever), a batch PostgreSQL refuses (retried forever), new events skipped after a lost log."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid

import asyncpg
import pytest

from infra.scenario.synthetic import classroom
from schemas.events import decode
from tests.test_writer_kit import (ROSTER, SESSION_START, create_topics, encoded, prepare_database, produce,
                                   read_topic, run_writer_until_caught_up, wait_until, writer_config)
from infra.foundation.config import config_from_dict
from consumers.writer import AttendanceWriter
from infra.devstack import broker

pytestmark = pytest.mark.slow


def _streams(seed: int = 3):
    return classroom(room_id="A101", start=SESSION_START, minutes=90, people=ROSTER[:3], visitors=1, seed=seed,
                     update_s=60.0, check=True)


def _variant(event: dict, **changes) -> bytes:
    """A copy of a valid event with a new event_id and the given fields, as JSON (not validated)."""
    changed = copy.deepcopy(event)
    changed["event_id"] = str(uuid.uuid4())
    changed.update(changes)
    return json.dumps(changed).encode()


async def _count(url: str, sql: str, *args) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def _stored_is(url: str, count: int) -> bool:
    return await _count(url, "SELECT count(*) FROM presence_event") == count


async def _letters(bootstrap: str, config) -> dict[int, dict]:
    """The dead letters by source offset (one source partition per test: every message keyed alike)."""
    values = await read_topic(bootstrap, config.kafka.topics.dead_letter.name)
    letters = [decode(config.kafka.topics.dead_letter.name, v) for v in values]
    return {letter["source_offset"]: letter for letter in letters}


def test_hostile_messages_are_dead_lettered_and_the_writer_moves_on(stack, fresh_database):
    """Between good events: deep nesting, years 9999 and 0001, NUL and an unpaired surrogate in ids, a
    message too large for a whole dead letter, no value at all. The writer never stops or pauses, every
    hostile message is a dead letter with its reason, every good one is stored."""
    bootstrap = stack.kafka_bootstrap_servers
    config = writer_config(max_batch=100_000)
    presence, recognitions = _streams()
    good = encoded(presence)
    sample = presence.messages[0][1]
    key = good[0][0]
    hostile = {  # value -> what its dead letter's reason must say
        b"[" * 5000: "RecursionError",
        b'{"a":' * 3000 + b"1" + b"}" * 3000: "RecursionError",
        _variant(sample, frame_time="9999-12-31T23:59:59Z", first_seen="9999-12-31T23:59:59Z",
                 last_seen="9999-12-31T23:59:59Z"): "max_event_future_s",
        _variant(sample, frame_time="0001-01-01T00:00:00Z", first_seen="0001-01-01T00:00:00Z",
                 last_seen="0001-01-01T00:00:00Z"): "max_event_age_days",
        _variant(sample, first_seen="2026-10-01T09:00:00Z"): "max_track_span_s",
        _variant(sample, track_id="room-A101-\u0000-1"): "NUL",
        _variant(sample, person_id="s\u00001"): "NUL",
        _variant(sample, track_id="room-\ud800"): "surrogate",
        b"\xff" * 900_000: "UTF-8",
    }
    messages = good[:50] + [(key, value) for value in hostile] + [(key, None)] + good[50:]

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        await produce(bootstrap, config.kafka.topics.presence.name, messages)
        await produce(bootstrap, config.kafka.topics.recognitions.name, encoded(recognitions))
        writer = await run_writer_until_caught_up(config, fresh_database, bootstrap, timeout_s=90)
        assert writer.stats.retries == 0, "content never pauses the writer"
        assert writer.health()["state"] == "ok"
        letters = await _letters(bootstrap, config)
        assert len(letters) == len(hostile) + 1 == writer.stats.dead_letters
        for offset, (value, why) in enumerate(hostile.items(), start=50):
            assert why in letters[offset]["reason"], (why, letters[offset]["reason"])
            if len(value) <= config.attendance.dead_letter_max_value_bytes:
                assert base64.b64decode(letters[offset]["value_base64"]) == value
                assert letters[offset]["truncated"] is False
        big = letters[50 + len(hostile) - 1]
        assert big["truncated"] is True and big["value_bytes"] == 900_000
        assert base64.b64decode(big["value_base64"]) == b"\xff" * config.attendance.dead_letter_max_value_bytes
        assert letters[50 + len(hostile)]["value_base64"] is None  # no value: "empty message"
        stored = await _count(fresh_database, "SELECT count(*) FROM presence_event")
        assert stored == len(good) + sum(1 for _, e in recognitions.messages if e["person_id"])
        assert await _count(fresh_database, "SELECT sum(count) FROM consumer_dead_letter") == len(hostile) + 1

    asyncio.run(main())


@pytest.mark.parametrize("spread_s", [0.0, 7 * 86400.0])
def test_far_apart_times_in_one_batch_make_no_sessions_in_between(stack, fresh_database, spread_s):
    """Two events 17 months apart in one batch, a weekly timetable slot: sessions are made for the days the
    events fall on, never for every week between. With the batch bound on (the default) the stale event
    is a dead letter; off, both are stored."""
    from tests.test_writer_kit import writer_raw_config

    bootstrap = stack.kafka_bootstrap_servers
    raw = writer_raw_config(max_batch=100_000, max_batch_spread_s=spread_s)
    raw["timetable"] = [{"course": "CS101", "room": "A101", "weekday": "mon", "start": "09:00:00", "end": "10:30:00"}]
    config = config_from_dict(raw, environ={})
    presence, _ = _streams()
    sample = presence.messages[0][1]
    old = "2025-06-02T09:05:00Z"  # a Monday, 17 months before the session day
    messages = [("room-A101", _variant(sample, frame_time=old, first_seen=old, last_seen=old)),
                ("room-A101", _variant(sample))]

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        await produce(bootstrap, config.kafka.topics.presence.name, messages)
        writer = await run_writer_until_caught_up(config, fresh_database, bootstrap, timeout_s=90)
        sessions = await _count(fresh_database, "SELECT count(*) FROM class_session")
        stored = await _count(fresh_database, "SELECT count(*) FROM presence_event")
        if spread_s:
            assert (stored, writer.stats.dead_letters, sessions) == (1, 1, 1)
            letter = next(iter((await _letters(bootstrap, config)).values()))
            assert letter["source_offset"] == 0 and "max_batch_spread_s" in letter["reason"]
        else:
            assert (stored, writer.stats.dead_letters, sessions) == (2, 0, 2)

    asyncio.run(main())


def test_a_batch_postgres_refuses_is_bisected_and_the_rest_stored(stack, fresh_database):
    """PostgreSQL refuses one event of a batch for its data (a CHECK constraint here: the stand-in for
    any data error the reader's checks do not foresee). That event is a dead letter naming PostgreSQL's
    reason; the 60 others of the batch are stored; the writer never paused."""
    bootstrap = stack.kafka_bootstrap_servers
    config = writer_config(max_batch=100_000)
    presence, _ = _streams()
    good = encoded(presence)[:60]
    sample = presence.messages[0][1]
    messages = good[:37] + [("room-A101", _variant(sample, track_id="poison-track"))] + good[37:]

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        await conn.execute("ALTER TABLE presence_event ADD CONSTRAINT no_poison CHECK (track_id <> 'poison-track')")
        await conn.close()
        await create_topics(bootstrap, config)
        await produce(bootstrap, config.kafka.topics.presence.name, messages)
        writer = await run_writer_until_caught_up(config, fresh_database, bootstrap, timeout_s=60)
        assert writer.stats.retries == 0 and writer.stats.bisected == 1 and writer.stats.dead_letters == 1
        letters = await _letters(bootstrap, config)
        assert list(letters) == [37] and "CheckViolationError" in letters[37]["reason"], letters
        assert await _count(fresh_database, "SELECT count(*) FROM presence_event") == 60

    asyncio.run(main())


def test_a_lost_log_is_noticed_recorded_and_read_again(stack, fresh_database):
    """The topics are deleted and made again under stored offsets (as a broker without persistence does
    when it restarts): the writer says so (error line, metric, health, audit_log) and stores the new
    events, which it would otherwise skip up to the old offsets."""
    from aiokafka.admin import AIOKafkaAdminClient
    from prometheus_client import REGISTRY


    bootstrap = stack.kafka_bootstrap_servers
    config = writer_config()
    presence, _ = _streams()
    first, second = encoded(presence)[:40], encoded(presence)[40:45]
    topic = config.kafka.topics.presence.name

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        await produce(bootstrap, topic, first)
        await run_writer_until_caught_up(config, fresh_database, bootstrap)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            topics = config.kafka.topics
            await admin.delete_topics([topics.presence.name, topics.recognitions.name])
        finally:
            await admin.close()
        await asyncio.sleep(1)
        await create_topics_again(bootstrap, config)
        partitions = await produce(bootstrap, topic, second)
        assert sum(partitions.values()) == 5
        # not run_writer_until_caught_up: the stored offsets (40) are past the new ends (5) from the start
        writer = AttendanceWriter(config, database_url=fresh_database, bootstrap_servers=bootstrap)
        task = asyncio.create_task(writer.run())
        try:
            await wait_until(lambda: _stored_is(fresh_database, 45), 60, "the new events to be stored")
        finally:
            writer.stop()
            await asyncio.wait_for(task, 30)
        assert writer.stats.log_resets == len(partitions) and writer.health()["state"] == "log_lost"
        assert writer.health()["log_resets"][0]["stored_next_offset"] == 40
        assert await _count(fresh_database, "SELECT count(*) FROM audit_log WHERE action = 'writer.log_lost'") \
            == len(partitions)
        (partition,) = partitions
        assert REGISTRY.get_sample_value("rollcall_writer_log_resets_total", {
            "group": config.attendance.group_id, "topic": topic, "partition": str(partition)}) == 1

    async def create_topics_again(bootstrap, config):

        topics = config.kafka.topics
        await broker.create_topics_async(bootstrap, [(topics.presence.name, topics.presence.partitions),
                                                     (topics.recognitions.name, topics.recognitions.partitions)])

    asyncio.run(main())
