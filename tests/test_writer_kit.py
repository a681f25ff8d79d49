"""Shared helpers of the attendance writer tests (no tests here): a config with private topics and a
consumer group, a migrated database with a course, topics made with the admin client, producing, running
the writer in-process until it has caught up, and snapshots of the attendance table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path

import asyncpg

from infra.foundation import db
from infra.foundation.config import Config, config_from_dict
from schemas.events import encode
from consumers.writer import AttendanceWriter
from consumers.sessions import close_due_sessions

ROSTER = ["s1", "s2", "s3", "s4"]
SESSION_DAY = dt.date(2026, 11, 2)  # a Monday, in the past: the clock closes it at once
SESSION_START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 1000}


def writer_raw_config(tag: str | None = None, **attendance) -> dict:
    tag = tag or uuid.uuid4().hex[:8]
    return {
        "kafka": {"topics": {
            "presence": {"name": f"t-{tag}.presence.v1", "partitions": 3},
            "recognitions": {"name": f"t-{tag}.recognitions.v1", "partitions": 2},
            "attendance": {"name": f"t-{tag}.attendance.v1", "partitions": 2},
            "dead_letter": {"name": f"t-{tag}.dead-letter.v1", "partitions": 1},
        }},
        "attendance": {"group_id": f"writer-{tag}", "max_batch": 500, "max_wait_ms": 50, **FAST_GROUP, **attendance},
        "rooms": [{"id": "A101"}, {"id": "B202"}],
        "courses": [{"id": "CS101", "roster": ROSTER, "faculty": ["prof"],
                     "policy": {"early_arrival_min": 15, "late_after_min": 10, "present_min_minutes": 20,
                                "left_early_min": 10}}],
        "timetable": [{"course": "CS101", "room": "A101", "date": SESSION_DAY.isoformat(),
                       "start": "09:00:00", "end": "10:30:00"}],
    }


def writer_config(tag: str | None = None, **attendance) -> Config:
    return config_from_dict(writer_raw_config(tag, **attendance), environ={})


def write_config_file(path: Path, raw: dict) -> Path:
    """The raw config as TOML (the writer subprocess reads it with --config)."""
    lines: list[str] = []

    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    for section in ("attendance",):
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in raw[section].items()]
    for kind, topic in raw["kafka"]["topics"].items():
        lines.append(f"[kafka.topics.{kind}]")
        lines += [f"{k} = {value(v)}" for k, v in topic.items()]
    for table in ("rooms", "courses", "timetable"):
        for item in raw[table]:
            lines.append(f"[[{table}]]")
            for k, v in item.items():
                if isinstance(v, dict):
                    v = "{ " + ", ".join(f"{a} = {value(b)}" for a, b in v.items()) + " }"
                    lines.append(f"{k} = {v}")
                else:
                    lines.append(f"{k} = {value(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def prepare_database(url: str, config: Config) -> None:
    db.migrate(url)
    await db.load_topology(url, config)


async def create_topics(bootstrap: str, config: Config) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = config.kafka.topics
        await admin.create_topics([NewTopic(t.name, t.partitions, 1) for t in
                                   (topics.presence, topics.recognitions, topics.attendance, topics.dead_letter)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]]) -> dict[int, int]:
    """Send keyed messages in order; {partition: messages sent to it}."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    counts: dict[int, int] = {}
    try:
        futures = [await producer.send(topic, key=key.encode(), value=value) for key, value in messages]
        for meta in await asyncio.gather(*futures):
            counts[meta.partition] = counts.get(meta.partition, 0) + 1
    finally:
        await producer.stop()
    return counts


def encoded(stream) -> list[tuple[str, bytes]]:

    return [(key, encode(event)) for key, event in stream.messages]


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every message on a topic, from the beginning to its end now (the end as fetch responses report it:
    Tansu's ListOffsets answers the last batch's base offset + 1, not the end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                values += [r.value for r in records]
            done = True
            for tp in parts:
                high = consumer.highwater(tp)
                done = done and high is not None and await consumer.position(tp) >= high
            if done:
                break
        return values
    finally:
        await consumer.stop()


async def stored_offsets_reach(url: str, group: str, ends: dict[tuple[str, int], int]) -> bool:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT topic, partition, next_offset FROM consumer_offset WHERE consumer_group = $1",
                                group)
    finally:
        await conn.close()
    stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    return all(stored.get(key, 0) >= end for key, end in ends.items() if end > 0)


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's end offset, from a fetch response's high watermark (see read_topic)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        deadline = time.monotonic() + 30
        while any(consumer.highwater(tp) is None for tp in parts) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=300)
        return {(tp.topic, tp.partition): consumer.highwater(tp) or 0 for tp in parts}
    finally:
        await consumer.stop()


async def wait_until(predicate, timeout_s: float = 120.0, what: str = "condition") -> None:
    """Poll an async predicate (a liveness bound, not a speed assertion: generous on a shared machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def run_writer_until_caught_up(config: Config, url: str, bootstrap: str, timeout_s: float = 120.0):
    """Run the writer in-process until its stored offsets reach the topics' ends and the outbox is empty."""

    topics = [config.kafka.topics.presence.name, config.kafka.topics.recognitions.name]
    ends = await end_offsets(bootstrap, topics)
    writer = AttendanceWriter(config, database_url=url, bootstrap_servers=bootstrap)
    task = asyncio.create_task(writer.run())

    async def done():
        if task.done():
            task.result()
        if writer._consumer is None or not writer._consumer.assignment():
            return False  # not judged before it has its partitions
        if not await stored_offsets_reach(url, config.attendance.group_id, ends):
            return False
        conn = await asyncpg.connect(url)
        try:
            # the clock's closing of past sessions (absent rows) and the outbox are part of catching up
            due = await conn.fetchval(
                """SELECT count(*) FROM class_session WHERE state IN ('scheduled', 'open')
                   AND ends_at + make_interval(secs => $1) < now()""", config.attendance.close_grace_s)
            return due == 0 and await conn.fetchval("SELECT count(*) FROM attendance_outbox") == 0
        finally:
            await conn.close()

    try:
        await wait_until(done, timeout_s, "the writer to catch up")
    finally:
        writer.stop()
        await asyncio.wait_for(task, 30)
    return writer


async def attendance_snapshot(url: str) -> list[tuple]:
    """The attendance table without its bookkeeping column (updated_at), in a stable order."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT cs.course_id, cs.room_id, cs.starts_at, a.person_id, a.status, a.first_seen, a.last_seen,
                      round(a.presence_s::numeric, 3) AS presence_s, a.evidence_event_ids,
                      a.door_recognitions, a.first_door_at, a.room_tracks, a.room_face
               FROM attendance a JOIN class_session cs ON cs.id = a.session_id
               ORDER BY cs.starts_at, cs.room_id, a.person_id""")
        return [tuple(r.values()) for r in rows]
    finally:
        await conn.close()


async def close_all_sessions(url: str) -> None:
    """Close (by the clock) every session whose end has passed, as the writer would."""

    conn = await asyncpg.connect(url)
    try:
        await close_due_sessions(conn, grace_s=0)
    finally:
        await conn.close()


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
