"""`rollcall bench writer`: the attendance writer's sustained throughput, from presence events on a topic to
committed attendance, against the plain COPY ceiling of the same PostgreSQL measured in the same run.

Setup (not timed): a private database on the configured PostgreSQL and private topics on the configured
broker (both deleted afterwards), ``rooms`` rooms with a session open now and 30 students each, and
``events`` presence events of their tracks produced to the topic beforehand. Timed: the writer, from its
first batch to the batch that stores the last offset (so joining the group is not counted);
``events_per_s`` = events written in that span / its length. Ceiling: the same rows COPYed in batches of
``[attendance] max_batch`` into a bare table shaped like ``presence_event`` (with its primary key), one
transaction a batch: what this PostgreSQL takes when nothing but the rows is done.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.sessions import open_session
from consumers.writer import AttendanceWriter
from infra.bench.writer_members import time_members
from infra.foundation import db
from infra.foundation.config import Config, config_from_dict
from infra.scenario.synthetic import presence_event

PEOPLE_PER_ROOM = 30


def _bench_config(config: Config, tag: str, rooms: int) -> dict:
    """The configuration's raw form with private topics, group, rooms and courses (a dict: it also goes to
    the members' processes)."""
    raw = config.model_dump(mode="json", exclude={"source"})
    # as many partitions as the deployment's presence topic: how the events spread over a group's members
    raw["kafka"]["topics"]["presence"] = {"name": f"bench-{tag}.presence.v1",
                                          "partitions": config.kafka.topics.presence.partitions}
    raw["kafka"]["topics"]["recognitions"] = {"name": f"bench-{tag}.recognitions.v1", "partitions": 1}
    raw["kafka"]["topics"]["attendance"] = {"name": f"bench-{tag}.attendance.v1", "partitions": 3}
    raw["kafka"]["topics"]["dead_letter"] = {"name": f"bench-{tag}.dead-letter.v1", "partitions": 1}
    raw["attendance"].update(group_id=f"bench-{tag}", session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             rebalance_timeout_ms=3000)
    raw["rooms"] = [{"id": f"R{i:03d}"} for i in range(rooms)]
    raw["courses"] = [{"id": f"C{i:03d}", "roster": [f"p{i:03d}-{j:02d}" for j in range(PEOPLE_PER_ROOM)]}
                      for i in range(rooms)]
    for key in ("cameras", "doors", "timetable"):
        raw[key] = []
    return raw


def _messages(rooms: int, events: int, now: float) -> list[tuple[bytes, bytes]]:
    """Presence events of every room's tracks over the last 50 minutes, in time order, keyed by camera."""
    tracks = rooms * PEOPLE_PER_ROOM
    per_track = max(2, events // tracks)
    step = 3000.0 / per_track
    template = presence_event(kind="update", room_id="R000", camera_id="cam-R000", track_id="t", person_id="p",
                              frame_time=now, first_seen=now)
    messages: list[tuple[float, bytes, bytes]] = []
    for room in range(rooms):
        camera = f"cam-R{room:03d}"
        for person in range(PEOPLE_PER_ROOM):
            start = now - 3000.0 + person
            for k in range(per_track):
                if len(messages) >= events:
                    break
                t = start + k * step
                event = dict(template, event_id=str(uuid.uuid4()), kind="enter" if k == 0 else "update",
                             room_id=f"R{room:03d}", camera_id=camera, track_id=f"{camera}-bench-{person}",
                             person_id=f"p{room:03d}-{person:02d}", first_seen=_ts(start), frame_time=_ts(t),
                             last_seen=_ts(t), dwell_s=round(t - start, 3), published_at=_ts(t + 0.05))
                messages.append((t, camera.encode(), json.dumps(event, separators=(",", ":")).encode()))
    messages.sort(key=lambda m: m[0])
    return [(key, value) for _, key, value in messages]


def _ts(unix: float) -> str:
    moment = dt.datetime.fromtimestamp(unix, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def bench_writer(config: Config, database_url: str, bootstrap: str, *, events: int, rooms: int,
                       say: Callable[[str], None], writers: int = 1) -> dict:
    """``writers`` 1: the writer in this process; more: a group of that many members, a process each
    (:mod:`infra.bench.writer_members`)."""
    tag = uuid.uuid4().hex[:8]
    raw_config = _bench_config(config, tag, rooms)
    bench_config = config_from_dict(raw_config, environ={})
    name = f"bench_writer_{tag}"
    admin_conn = await asyncpg.connect(database_url, timeout=10)
    base, _, _ = database_url.rpartition("/")
    url = f"{base}/{name}"
    topics = bench_config.kafka.topics
    every_topic = (topics.presence, topics.recognitions, topics.attendance, topics.dead_letter)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:  # everything made below is removed in `finally`, also when a step fails
        await admin.start()
        await admin_conn.execute(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(db.migrate, url)
        await db.load_topology(url, bench_config)
        conn = await asyncpg.connect(url)
        now = time.time()
        for room in range(rooms):
            await open_session(conn, course_id=f"C{room:03d}", room_id=f"R{room:03d}", actor="bench",
                               starts_at=dt.datetime.fromtimestamp(now - 3600, dt.timezone.utc), minutes=240)
        await admin.create_topics([NewTopic(t.name, t.partitions, 1) for t in every_topic])
        messages = _messages(rooms, events, now)
        say(f"producing {len(messages)} presence events ({rooms} rooms x {PEOPLE_PER_ROOM} people) ...")
        await _produce(bootstrap, topics.presence.name, messages)

        if writers == 1:
            say("running the writer ...")
            timed = await _time_writer(bench_config, url, bootstrap, len(messages))
        else:
            say(f"running {writers} writers in one group, a process each ...")
            timed = await time_members(raw_config, url, bootstrap, len(messages), writers)
        rows = await conn.fetchval("SELECT count(*) FROM attendance")

        say("measuring the COPY ceiling ...")
        ceiling = await _copy_ceiling(conn, url, len(messages), config.attendance.max_batch)
        await conn.close()
    finally:
        try:  # the broker may keep messages in memory (the bundled one does): give them back
            await admin.delete_topics([t.name for t in every_topic])
        except Exception:  # noqa: BLE001 - a broker that refuses deletion keeps them; not the benchmark's result
            pass
        await admin.close()
        await admin_conn.close()
        await db.drop_database(database_url, name)
    events_per_s = timed.pop("events_per_s")
    return {
        "events": len(messages),
        "writers": writers,
        "events_per_s": round(events_per_s, 1),
        "ceiling_rows_per_s": round(ceiling, 1),
        "ratio_ceiling": round(events_per_s / ceiling, 3),
        "mean_batch": round(len(messages) / max(timed["batches"], 1), 1),
        **timed,
        "attendance_rows": rows,
        "rooms": rooms,
        "max_batch": config.attendance.max_batch,
    }


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Produce ``messages`` (key, value) to ``topic``, 20000 at a time, each slice acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for i in range(0, len(messages), 20000):
            futures = [await producer.send(topic, key=k, value=v) for k, v in messages[i:i + 20000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _time_writer(bench_config: Config, url: str, bootstrap: str, total: int) -> dict:
    """Run the writer until it has read all ``total`` events: events/s from its first batch on, batches."""
    writer = AttendanceWriter(bench_config, database_url=url, bootstrap_servers=bootstrap)
    task = asyncio.create_task(writer.run())
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    while writer.stats.events + writer.stats.duplicates < total and time.monotonic() < deadline:
        if task.done():
            task.result()
        if first is None and writer.stats.batches:
            first = (time.monotonic(), writer.stats.events)
        await asyncio.sleep(0.01)
    finished = time.monotonic()
    writer.stop()
    await task
    if first is None or writer.stats.events < total:
        raise RuntimeError(f"the writer wrote {writer.stats.events} of {total} events in 600 s")
    return {"events_per_s": (writer.stats.events - first[1]) / max(finished - first[0], 1e-6),
            "batches": writer.stats.batches}


async def _copy_ceiling(conn, url: str, count: int, batch: int) -> float:
    """Rows/s of a bare batched COPY into a table shaped like presence_event, one transaction a batch."""
    await conn.execute("CREATE TABLE bench_ceiling (LIKE presence_event INCLUDING DEFAULTS INCLUDING INDEXES)")
    now = dt.datetime.now(dt.timezone.utc)
    rows = [(uuid.uuid4(), "update", "R000", "cam-R000", f"t{i % 1200}", f"p{i % 1200}", now, now, now, None,
             "bench", 0, i) for i in range(count)]
    columns = ["event_id", "kind", "room_id", "camera_id", "track_id", "person_id", "frame_time", "first_seen",
               "last_seen", "recognition_event_id", "topic", "kafka_partition", "kafka_offset"]
    started = time.perf_counter()
    for i in range(0, count, batch):
        async with conn.transaction():
            await conn.copy_records_to_table("bench_ceiling", records=rows[i:i + batch], columns=columns)
    return count / (time.perf_counter() - started)
