"""The attendance writer on the real broker and PostgreSQL: attendance from presence and recognition
events, exactly once (duplicates, redelivery, small or large batches give the same table), dead letters,
offsets stored with the results, the attendance topic, two writers in one group."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import asyncpg
import pytest

from infra.scenario.synthetic import classroom
from schemas.events import decode
from tests.test_writer_kit import (ROSTER, SESSION_START, attendance_snapshot, create_topics, encoded, end_offsets,
                                   prepare_database, produce, read_topic, run_writer_until_caught_up,
                                   stored_offsets_reach, wait_until, writer_config)
from consumers.writer import AttendanceWriter
from infra.foundation.config import AttendanceWriterConfig

pytestmark = pytest.mark.slow


def _streams(seed: int = 3):
    # s4 is on the roster but never comes; a visitor comes but is never identified
    return classroom(room_id="A101", start=SESSION_START, minutes=90, people=ROSTER[:3], visitors=1, seed=seed,
                     update_s=60.0, check=True)


def _malformed() -> list[tuple[str, bytes]]:
    return [("room-A101", b"not json"),
            ("room-A101", json.dumps({"event_type": "presence", "schema_version": "9.0"}).encode()),
            ("room-A101", json.dumps({"event_type": "nonsense", "schema_version": "1.0"}).encode())]


async def _fill(bootstrap: str, config, presence, recognitions, *, duplicate: bool = False, malformed: bool = False):
    messages = encoded(presence)
    if duplicate:  # a publisher retry: every 5th event sent again, later
        messages = messages + messages[::5]
    if malformed:
        messages = messages[:10] + _malformed() + messages[10:]
    await produce(bootstrap, config.kafka.topics.presence.name, messages)
    await produce(bootstrap, config.kafka.topics.recognitions.name, encoded(recognitions))


def test_attendance_is_exactly_once_whatever_the_batches_duplicates_and_malformed_messages(stack, fresh_database):
    bootstrap = stack.kafka_bootstrap_servers
    presence, recognitions = _streams()

    async def clean_pass(url):
        config = writer_config(max_batch=100_000)
        await prepare_database(url, config)
        await create_topics(bootstrap, config)
        await _fill(bootstrap, config, presence, recognitions)
        await run_writer_until_caught_up(config, url, bootstrap)
        return config

    async def rough_pass(url):
        config = writer_config(max_batch=7)  # many small batches
        await prepare_database(url, config)
        await create_topics(bootstrap, config)
        await _fill(bootstrap, config, presence, recognitions, duplicate=True, malformed=True)
        writer = await run_writer_until_caught_up(config, url, bootstrap)
        return config, writer

    async def main():
        clean_url = fresh_database
        base, _, _ = clean_url.rpartition("/")
        conn = await asyncpg.connect(clean_url)
        await conn.execute("CREATE DATABASE rough_" + clean_url.rpartition("/")[2])
        await conn.close()
        rough_url = f"{base}/rough_{clean_url.rpartition('/')[2]}"

        clean_config = await clean_pass(clean_url)
        rough_config, writer = await rough_pass(rough_url)
        clean, rough = await attendance_snapshot(clean_url), await attendance_snapshot(rough_url)
        assert clean == rough and clean, "duplicates, malformed messages and batch sizes must not change attendance"

        people = {row[3]: row for row in clean}
        assert set(people) == set(ROSTER), "everyone on the roster has a row (s4 absent), visitors none"
        assert people["s4"][4] == "absent" and people["s4"][5] is None
        assert all(row[4] in ("present", "late", "left_early", "absent") for row in clean)
        assert any(row[4] != "absent" for row in clean)
        assert all(row[8] for row in clean if row[5] is not None), "every sighting row names its evidence"

        # the rough pass saw every duplicate and dead-lettered the malformed messages, with reasons
        assert writer.stats.duplicates >= len(presence.messages) // 5
        assert writer.stats.dead_letters == 3
        # ... and said so on its Prometheus metrics, with nothing left to store on any partition
        from prometheus_client import REGISTRY

        group = rough_config.attendance.group_id
        sample = lambda name, **labels: REGISTRY.get_sample_value(name, {"group": group, **labels})  # noqa: E731
        assert sample("rollcall_writer_events_total", outcome="dead_letter") == 3
        assert sample("rollcall_writer_events_total", outcome="stored") == writer.stats.events > 0
        assert sample("rollcall_writer_events_total", outcome="duplicate") == writer.stats.duplicates
        assert sample("rollcall_writer_messages_total") == writer.stats.messages
        assert sample("rollcall_writer_batch_seconds_count") == writer.stats.batches
        lags = [m for metric in REGISTRY.collect() if metric.name == "rollcall_writer_lag_messages"
                for m in metric.samples if m.labels["group"] == group]
        assert len(lags) == 3 + 2 and all(m.value == 0 for m in lags), lags  # 3 presence + 2 recognition partitions
        letters = [decode(rough_config.kafka.topics.dead_letter.name, v)
                   for v in await read_topic(bootstrap, rough_config.kafka.topics.dead_letter.name)]
        assert len(letters) == 3 and all(letter["reason"] for letter in letters)
        assert base64.b64decode(letters[0]["value_base64"]) == b"not json"
        conn = await asyncpg.connect(rough_url)
        try:
            assert await conn.fetchval("SELECT sum(count) FROM consumer_dead_letter") == 3
            assert await conn.fetchval("SELECT count(*) FROM presence_event") == (
                len(presence.messages) + sum(1 for _, e in recognitions.messages if e["person_id"]))
        finally:
            await conn.close()

        # every attendance change went out on the attendance topic, valid against attendance.v1
        events = [decode(clean_config.kafka.topics.attendance.name, v)
                  for v in await read_topic(bootstrap, clean_config.kafka.topics.attendance.name)]
        finalised = {e["person_id"]: e for e in events if e["change"] == "finalised"}
        assert set(finalised) == set(ROSTER)
        assert all(finalised[p]["status"] == people[p][4] for p in ROSTER)

    asyncio.run(main())


def test_writer_resumes_from_offsets_in_the_database_and_redelivery_changes_nothing(stack, fresh_database):
    """A second writer (same group) after the first stopped reads nothing again; a writer of a new group
    with the offsets copied from the database starts where they say; replaying the whole topic into the
    same database (offsets deleted) changes no row."""
    bootstrap = stack.kafka_bootstrap_servers
    config = writer_config()
    presence, recognitions = _streams(seed=5)

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        await _fill(bootstrap, config, presence, recognitions)
        first = await run_writer_until_caught_up(config, fresh_database, bootstrap)
        before = await attendance_snapshot(fresh_database)
        assert first.stats.events > 0 and before
        again = await run_writer_until_caught_up(config, fresh_database, bootstrap)
        assert again.stats.messages == 0, "offsets stored with the results: nothing is read twice"
        conn = await asyncpg.connect(fresh_database)
        await conn.execute("DELETE FROM consumer_offset")  # force a full redelivery
        await conn.close()
        replay = await run_writer_until_caught_up(config, fresh_database, bootstrap)
        assert replay.stats.messages >= len(presence.messages) and replay.stats.events == 0
        assert await attendance_snapshot(fresh_database) == before

    asyncio.run(main())


def test_two_writers_in_one_group_share_the_partitions(stack, fresh_database):
    bootstrap = stack.kafka_bootstrap_servers
    config = writer_config(max_batch=50)
    presence, recognitions = _streams(seed=7)

    async def main():

        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        writers = [AttendanceWriter(config, database_url=fresh_database, bootstrap_servers=bootstrap,
                                    client_id=f"w{i}") for i in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in writers]
        try:
            await wait_until(lambda: _all_assigned(writers), 60, "both writers to get partitions")
            await _fill(bootstrap, config, presence, recognitions)
            ends = await end_offsets(bootstrap, [config.kafka.topics.presence.name,
                                                 config.kafka.topics.recognitions.name])
            await wait_until(lambda: stored_offsets_reach(fresh_database, config.attendance.group_id, ends), 120,
                             "the group to catch up")
        finally:
            for w in writers:
                w.stop()
            await asyncio.gather(*tasks)
        assert all(w.stats.messages > 0 for w in writers), "scaling is adding consumers: both did work"
        total = sum(w.stats.events for w in writers)
        assert total == len(presence.messages) + sum(1 for _, e in recognitions.messages if e["person_id"])

    asyncio.run(main())


def test_a_lone_event_is_written_at_once_with_the_default_batch_size(stack, fresh_database):
    """Batches are what getmany has at hand, up to max_batch: a large max_batch never waits for a batch to
    fill. One event, produced to an idle writer with the default max_batch, is stored well within a second
    or two (the bound is generous for a shared machine; a batch waiting to fill would never come)."""
    bootstrap = stack.kafka_bootstrap_servers
    defaults = AttendanceWriterConfig()
    default_batch = defaults.max_batch
    config = writer_config(max_batch=default_batch, max_wait_ms=defaults.max_wait_ms)
    presence, _ = _streams(seed=11)

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        writer = AttendanceWriter(config, database_url=fresh_database, bootstrap_servers=bootstrap)
        task = asyncio.create_task(writer.run())
        try:
            await wait_until(lambda: _all_assigned([writer]), 60, "the writer to get its partitions")
            await asyncio.sleep(1.0)  # idle: empty rounds of max_wait_ms
            await produce(bootstrap, config.kafka.topics.presence.name, encoded(presence)[:1])
            produced = time.monotonic()
            while writer.stats.events < 1 and time.monotonic() - produced < 30:
                await asyncio.sleep(0.01)
            delay = time.monotonic() - produced
        finally:
            writer.stop()
            await task
        assert writer.stats.events == 1 and writer.stats.batches == 1
        assert delay < 3.0, f"a lone event waited {delay:.2f} s with max_batch {default_batch}"

    asyncio.run(main())


async def _all_assigned(writers) -> bool:
    return all(w._consumer is not None and w._consumer.assignment() for w in writers)
