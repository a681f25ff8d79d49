"""A run's own database and topics: scenario runs and benchmarks that leave nothing behind.

A scenario run enrols its people, loads its topology and publishes its events; a benchmark enrols too.
On shared state one run's leftovers break the next (the same photo enrolled under another person id makes
enrolment refuse; a bad message left on a topic is read by every later writer). So each run gets:

- a database ``rollcall_<kind>_<pid>_<hex>`` on the same PostgreSQL, migrated with the project's
  migrations, dropped at the end (also on error and Ctrl-C: ``with`` block);
- its own topics: every configured topic's name with ``.<kind>-<pid>-<hex>`` appended, at the configured
  partition counts, deleted at the end; the run's config names them, so everything the run starts
  (processor, writer) uses them without knowing.

A run killed with SIGKILL cannot clean up: its process id is in the names, and the next run on the same
embedded stack removes what dead processes left (``sweep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra.devstack import broker

from infra.foundation import db
from infra.foundation.embedded import alive
from infra.foundation.errors import RollcallError
from infra.foundation.config import Config

log = logging.getLogger("rollcall.run_space")

# rollcall_run_1234_ab12cd34 (database) / rollcall.presence.v1.run-1234-ab12cd34 (topic)
DATABASE_NAME = re.compile(r"^rollcall_(run|bench)_(\d+)_[0-9a-f]{8}$")
TOPIC_SUFFIX = re.compile(r"\.(run|bench)-(\d+)-[0-9a-f]{8}$")


@dataclass
class RunSpace:
    tag: str  # "<kind>-<pid>-<hex>": in the topic names; the database name is the same with underscores
    config: Config  # the caller's config with this run's topic names
    database_url: str  # this run's database
    server_url: str  # the PostgreSQL the database lives on (to drop it)
    bootstrap: str
    topics: list[str] = field(default_factory=list)

    @property
    def database(self) -> str:
        return "rollcall_" + self.tag.replace("-", "_")


def run_config(config: Config, tag: str) -> Config:
    """``config`` with every topic renamed ``<name>.<tag>`` (same partitions)."""
    topics = config.kafka.topics
    renamed = topics.model_copy(update={
        key: getattr(topics, key).model_copy(update={"name": f"{getattr(topics, key).name}.{tag}"})
        for key in type(topics).model_fields})
    return config.model_copy(update={"kafka": config.kafka.model_copy(update={"topics": renamed})})


def open_space(config: Config, database_url: str, bootstrap: str, *, kind: str = "run") -> RunSpace:
    """Create the run's database (migrated) and topics. Undo with :func:`close_space` (or use ``run_space``)."""
    tag = f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    space = RunSpace(tag=tag, config=run_config(config, tag), database_url="", server_url=database_url,
                     bootstrap=bootstrap)
    space.database_url = urlsplit(database_url)._replace(path=f"/{space.database}").geturl()
    try:
        broker.run_coroutine(_create_database(database_url, space.database))
        db.migrate(space.database_url)
        wanted = [(t.name, t.partitions, t.compacted) for t in space.config.kafka.topics.all()]
        space.topics = [name for name, *_ in wanted]
        broker.create_topics(bootstrap, wanted)
    except BaseException:
        close_space(space)
        raise
    return space


def close_space(space: RunSpace) -> list[str]:
    """Drop the run's database and delete its topics; returns what could not be removed. A failure is
    logged, never raised (cleanup must not hide the run's own result or error)."""
    return broker.run_coroutine(_remove(space.server_url, space.bootstrap, [space.database], space.topics))


@contextlib.contextmanager
def run_space(config: Config, database_url: str, bootstrap: str, *, kind: str = "run") -> Iterator[RunSpace]:
    """``with run_space(config, database_url, bootstrap) as space: ...``: a RunSpace for the block."""
    space = open_space(config, database_url, bootstrap, kind=kind)
    try:
        yield space
    finally:
        close_space(space)


def sweep(database_url: str, bootstrap: str) -> list[str]:
    """Remove the databases and topics of runs whose process is gone (killed before cleaning up). Only for a
    stack on this machine (the process ids are this machine's). Returns what was removed."""
    return broker.run_coroutine(_sweep(database_url, bootstrap))


async def _sweep(database_url: str, bootstrap: str) -> list[str]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
    finally:
        await conn.close()
    databases = [n for n in names if (m := DATABASE_NAME.match(n)) and not alive(int(m.group(2)))]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if (m := TOPIC_SUFFIX.search(t)) and not alive(int(m.group(2)))]
    finally:
        await admin.close()
    left = await _remove(database_url, bootstrap, databases, topics)
    return [name for name in databases + topics if name not in left]


async def _create_database(server_url: str, name: str) -> None:
    try:
        conn = await asyncpg.connect(server_url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        raise db.describe_unreachable(server_url, exc) from None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise RollcallError(f"cannot create the run's own database {name} on {db.redact(server_url)} ({exc}); "
                            "the user needs the CREATEDB privilege (the embedded stack's has it)") from None
    finally:
        await conn.close()


async def _remove(server_url: str, bootstrap: str, databases: list[str], topics: list[str]) -> list[str]:
    """Delete the topics and drop the databases; returns those that could not be removed (logged)."""
    left: list[str] = []
    if topics:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            await admin.delete_topics(topics)
            remaining = set(await admin.list_topics()) & set(topics)
            left += sorted(remaining)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            log.warning("could not delete the run's topics %s: %s", ", ".join(topics), exc)
            left += topics
        finally:
            await admin.close()
    for name in databases:
        try:
            await db.drop_database(server_url, name, within_s=15.0)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            log.warning("could not drop the run's database %s: %s: %s", name, type(exc).__name__, exc)
            left.append(name)
    if left:
        log.warning("left behind: %s", ", ".join(left))
    return left


