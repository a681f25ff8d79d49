"""Runs that leave nothing behind (infra/devstack/run_space.py), on the real PostgreSQL and broker of the test stack:
two scenario-style runs one after the other do not see each other's enrolments or messages, and each
run's database and topics are gone afterwards, also when the run fails or its process was killed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.devstack.cpu_load import MARKER
from infra.foundation.paths import PROJECT_ROOT
from infra.devstack.run_space import open_space, close_space, run_space, sweep
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from processor.enroll import enroll_photos

PHOTO = PROJECT_ROOT / "infra" / "scenarios" / "photos" / "macron_2014.jpg"


@pytest.fixture(scope="module")
def config():
    return load_config(EXAMPLE_CONFIG, environ={})


async def databases(stack) -> set[str]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def topics(stack) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def enrol(config, database_url: str, person_id: str):
    return await enroll_photos(database_url, person_id, person_id, [PHOTO], consent=True, consent_by="test",
                               pack=config.models.pack, thresholds=config.thresholds, privacy=config.privacy)


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"room-a101", value=value)
    finally:
        await producer.stop()


async def read_from_start(bootstrap: str, topic: str, seconds: float = 3.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        while loop.time() < ends:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                values += [r.value for r in records]
    finally:
        await consumer.stop()
    return values


def test_two_runs_do_not_see_each_others_enrolments_or_messages(stack, config):
    bootstrap = stack.kafka_bootstrap_servers
    with run_space(config, stack.database_url, bootstrap) as first:
        # Run 1 enrols the photo under another id and leaves a bad message on its presence topic.
        assert (await_(enrol(config, first.database_url, "someone-else"))).accepted
        bad = b"not json {" + uuid.uuid4().hex.encode()
        await_(produce(bootstrap, first.config.kafka.topics.presence.name, bad))
        assert bad in await_(read_from_start(bootstrap, first.config.kafka.topics.presence.name))
        # On one database the same photo under another id is refused: what broke later runs before.
        refused = await_(enrol(config, first.database_url, "macron"))
        assert not refused.accepted and refused.rejected[0].code == "other_person", refused
        first_names = {t.name for t in first.config.kafka.topics.all()}
        assert first_names <= await_(topics(stack)) and first.database in await_(databases(stack))
    # Gone afterwards.
    assert not first_names & await_(topics(stack))
    assert first.database not in await_(databases(stack))

    with run_space(config, stack.database_url, bootstrap) as second:
        assert second.database != first.database
        assert not {t.name for t in second.config.kafka.topics.all()} & first_names
        # Run 2 enrols the same photo under its real id: accepted, nothing of run 1 is there.
        assert (await_(enrol(config, second.database_url, "macron"))).accepted
        assert await_(read_from_start(bootstrap, second.config.kafka.topics.presence.name)) == []
        # Every configured topic exists for the run, at its configured partition count.
        for topic in second.config.kafka.topics.all():
            assert topic.name.endswith("." + second.tag)
    # The shared topics and database were never touched.
    assert bad not in await_(read_from_start(bootstrap, config.kafka.topics.presence.name, seconds=1.5))


def test_a_failing_run_removes_what_it_made(stack, config):
    with pytest.raises(RuntimeError):
        with run_space(config, stack.database_url, stack.kafka_bootstrap_servers) as failing:
            names = {t.name for t in failing.config.kafka.topics.all()}
            raise RuntimeError("the run failed")
    assert not names & await_(topics(stack))
    assert failing.database not in await_(databases(stack))
    assert close_space(failing) == []  # idempotent: nothing left to remove


def test_sweep_removes_what_a_killed_run_left(stack, config):
    """A run killed with SIGKILL never cleans up; the next run removes databases and topics whose process
    is gone, and leaves those of live runs alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = f"run-{dead.pid}-{uuid.uuid4().hex[:8]}"
    database = "rollcall_" + tag.replace("-", "_")
    topic = f"rollcall.presence.v1.{tag}"

    async def leave_behind():
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()

    await_(leave_behind())
    live = open_space(config, stack.database_url, stack.kafka_bootstrap_servers)
    try:
        removed = sweep(stack.database_url, stack.kafka_bootstrap_servers)
        assert database in removed and topic in removed, removed
        assert live.database in await_(databases(stack))  # this process is alive: its run is kept
        assert database not in await_(databases(stack)) and topic not in await_(topics(stack))
    finally:
        assert close_space(live) == []


def hogs_of(parent: int) -> list[int]:
    """Live CPU-load processes started by ``parent`` (their command line names it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        if MARKER.encode() in argv and str(parent).encode() in argv and state != "Z":
            found.append(int(proc.name))
    return found


def test_interrupted_scenario_run_leaves_no_hog_database_or_topic(stack, stack_dir, tmp_path):
    """Ctrl-C in the middle of `rollcall scenario run --load`: the hog is killed, the run's database and
    topics are removed, and the command ends with one line."""
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir), "PYTHONUNBUFFERED": "1"}
    spec = PROJECT_ROOT / "infra" / "scenarios" / "default.toml"
    errors = tmp_path / "stderr"
    with open(errors, "w") as sink:
        # SIGINT as a terminal gives it, even if this test runs where it is ignored (a background CI job)
        run = subprocess.Popen([sys.executable, "-m", "infra.cli.main", "scenario", "run", str(spec), "--load", "0.5"],
                               stdout=subprocess.PIPE, stderr=sink, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        database, hogs = None, []
        deadline = time.monotonic() + 120
        for line in run.stdout:
            if match := re.match(r"run (\S+): database (\S+),", line):
                tag, database = match.groups()
            if line.startswith("CPU load:"):
                hogs = hogs_of(run.pid)
                break
            assert time.monotonic() < deadline, "the run did not start its load"
        assert database and hogs, (database, hogs)
        time.sleep(6)  # enrolling or running the processor
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=90)
        stderr = errors.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130 and stderr.strip().splitlines()[-1] == "rollcall: interrupted", stderr[-2000:]
    assert hogs_of(run.pid) == [], "the CPU load outlived the interrupted run"
    assert database not in await_(databases(stack))
    assert not [t for t in await_(topics(stack)) if t.endswith("." + tag)]


def await_(coroutine):
    return asyncio.run(coroutine)
