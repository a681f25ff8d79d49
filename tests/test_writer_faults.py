"""Fault tests of the attendance writer: killed with SIGKILL ten times while events flow, and PostgreSQL
restarted under it; each time the attendance table ends identical to a clean single pass."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from infra.scenario.synthetic import classroom
from infra.devstack.postgres import Cluster, database_url
from tests.test_writer_kit import (ROSTER, SESSION_START, attendance_snapshot, create_topics, encoded, end_offsets,
                                   prepare_database, produce, run_writer_until_caught_up, stored_offsets_reach,
                                   wait_until, write_config_file, writer_config, writer_raw_config)
from consumers.writer import AttendanceWriter

pytestmark = pytest.mark.slow
ROLLCALL = Path(sys.executable).with_name("rollcall")


def _events(seed: int, update_s: float = 20.0):
    return classroom(room_id="A101", start=SESSION_START, minutes=90, people=ROSTER[:3], visitors=1, seed=seed,
                     update_s=update_s, check=False)


async def _new_database(url: str, name: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{url.rpartition('/')[0]}/{name}"


async def _produce_in_chunks(bootstrap: str, config, presence, recognitions, chunks: int, pause_s: float) -> None:
    """Events keep arriving while the writer is killed and restarted."""
    messages = encoded(presence)
    await produce(bootstrap, config.kafka.topics.recognitions.name, encoded(recognitions))
    size = -(-len(messages) // chunks)
    for i in range(0, len(messages), size):
        await produce(bootstrap, config.kafka.topics.presence.name, messages[i:i + size])
        await asyncio.sleep(pause_s)


async def _clean_reference(stack, tag: str, presence, recognitions, url: str) -> list[tuple]:
    """The same topics read by another group into another database in one clean pass."""
    config = writer_config(tag, group_id=f"clean-{tag}", max_batch=100_000)
    await prepare_database(url, config)
    await run_writer_until_caught_up(config, url, stack.kafka_bootstrap_servers)
    return await attendance_snapshot(url)


def test_sigkill_ten_times_while_events_flow_leaves_attendance_as_a_clean_pass(stack, fresh_database, tmp_path):
    bootstrap = stack.kafka_bootstrap_servers
    raw = writer_raw_config(max_batch=10)  # small batches: kills land between and inside many transactions
    tag = raw["attendance"]["group_id"].removeprefix("writer-")
    config = writer_config(tag, max_batch=10)
    config_path = write_config_file(tmp_path / "rollcall.toml", raw)
    presence, recognitions = _events(seed=11, update_s=5.0)  # ~3000 events, fed over the whole kill period
    env = {**os.environ, "DATABASE_URL": fresh_database, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    rng = random.Random(2026)

    def start_writer() -> subprocess.Popen:
        return subprocess.Popen([str(ROLLCALL), "--config", str(config_path), "attendance", "writer"], env=env,
                                stdout=subprocess.DEVNULL, stderr=(tmp_path / "writer.log").open("a"),
                                start_new_session=True)

    async def main():
        await prepare_database(fresh_database, config)
        await create_topics(bootstrap, config)
        messages = encoded(presence)
        await produce(bootstrap, config.kafka.topics.recognitions.name, encoded(recognitions))
        chunk = -(-len(messages) // 10)
        stored_before_kill, left_work = [], []
        for kill in range(10):
            # the next part of the stream arrives while the writer starts; it is killed at a random point
            # after it has committed something of it (so mid-stream, often mid-transaction)
            feeding = asyncio.create_task(produce(bootstrap, config.kafka.topics.presence.name,
                                                  messages[kill * chunk:(kill + 1) * chunk]))
            before = await _stored_total(fresh_database, config.attendance.group_id)
            writer = start_writer()
            await wait_until(lambda: _progressed(fresh_database, config.attendance.group_id, before), 60,
                             "the writer to commit a batch")
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            await feeding
            stored_before_kill.append(await _stored_total(fresh_database, config.attendance.group_id))
            produced = len(recognitions.messages) + min(len(messages), (kill + 1) * chunk)
            left_work.append(stored_before_kill[-1] < produced)
        ends = await end_offsets(bootstrap, [config.kafka.topics.presence.name, config.kafka.topics.recognitions.name])
        writer = start_writer()
        try:
            await wait_until(lambda: stored_offsets_reach(fresh_database, config.attendance.group_id, ends), 180,
                             "the restarted writer to catch up")
            await wait_until(lambda: _no_due_sessions(fresh_database), 60, "the clock to close the session")
        finally:
            writer.send_signal(signal.SIGTERM)  # before its handler is installed when it had nothing left to do
            assert writer.wait(timeout=60) in (0, -signal.SIGTERM), (tmp_path / "writer.log").read_text()[-2000:]
        killed_run = await attendance_snapshot(fresh_database)
        assert sum(left_work) >= 5, f"most kills interrupt work in progress: {stored_before_kill}"
        clean = await _clean_reference(stack, tag, presence, recognitions,
                                       await _new_database(stack.database_url, f"clean_{tag}"))
        assert killed_run == clean and clean
        conn = await asyncpg.connect(fresh_database)
        try:  # every event stored exactly once
            stored = await conn.fetchval("SELECT count(*) FROM presence_event")
        finally:
            await conn.close()
        assert stored == len(presence.messages) + sum(1 for _, e in recognitions.messages if e["person_id"])

    asyncio.run(main())


def test_postgres_restart_under_the_running_writer_loses_nothing(stack, tmp_path):
    """A private PostgreSQL cluster (not the session's) is stopped and started again while the writer
    works; the writer pauses, retries, and the result equals a clean pass."""

    bootstrap = stack.kafka_bootstrap_servers
    cluster = Cluster(tmp_path / "pg")
    log = tmp_path / "pg.log"
    cluster.ensure_initialized(log, fast=True)
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster.start(port, log, fast=True)
    try:
        cluster.ensure_database(port)
        url = database_url(port)
        config = writer_config(max_batch=30)
        tag = config.attendance.group_id.removeprefix("writer-")
        presence, recognitions = _events(seed=13)

        async def main():
            await prepare_database(url, config)
            await create_topics(bootstrap, config)
            writer = AttendanceWriter(config, database_url=url, bootstrap_servers=bootstrap)
            task = asyncio.create_task(writer.run())
            feeding = asyncio.create_task(_produce_in_chunks(bootstrap, config, presence, recognitions, 8, 0.5))
            await wait_until(lambda: _stored_total(url, config.attendance.group_id), 60, "a first committed batch")
            await asyncio.to_thread(cluster.stop, 30)  # PostgreSQL away under the writer
            await asyncio.sleep(3)
            retries_while_down = writer.stats.retries
            await asyncio.to_thread(cluster.start, port, log, True)
            await feeding
            ends = await end_offsets(bootstrap, [config.kafka.topics.presence.name,
                                                 config.kafka.topics.recognitions.name])
            await wait_until(lambda: stored_offsets_reach(url, config.attendance.group_id, ends), 180,
                             "the writer to resume and catch up")
            await wait_until(lambda: _no_due_sessions(url), 60, "the clock to close the session")
            await asyncio.sleep(1.5)  # let the outbox drain (not compared)
            writer.stop()
            await asyncio.wait_for(task, 30)
            assert retries_while_down > 0, "the writer noticed PostgreSQL was away (and retried)"
            restarted = await attendance_snapshot(url)
            clean = await _clean_reference(stack, tag, presence, recognitions,
                                           await _new_database(stack.database_url, f"clean_{tag}"))
            differing = [(a, b) for a, b in zip(restarted, clean) if a != b]
            assert restarted == clean and clean, (len(restarted), len(clean), differing[:3])

        asyncio.run(main())
    finally:
        cluster.stop(timeout=30)


async def _stored_total(url: str, group: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offset WHERE consumer_group = $1",
                                       group))
    finally:
        await conn.close()


async def _progressed(url: str, group: str, before: int) -> bool:
    return await _stored_total(url, group) > before


async def _no_due_sessions(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            """SELECT count(*) = 0 FROM class_session WHERE state IN ('scheduled', 'open')
               AND ends_at + make_interval(secs => 300) < now()""")
    finally:
        await conn.close()
