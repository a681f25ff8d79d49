"""Shared fixtures: one private embedded stack (real PostgreSQL, real broker, real RTSP server on
free loopback ports) for the whole test session, in a temp folder, stopped at the end."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest
from infra.devstack import stack as embedded
from infra.foundation.config import EXAMPLE_CONFIG, load_config


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stack")
    # Private stack state for this session; models and binaries stay shared under var/.
    os.environ["ROLLCALL_STACK_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def stack(stack_dir):

    config = load_config(EXAMPLE_CONFIG, environ={})
    state = embedded.up(topics=[(t.name, t.partitions, t.compacted) for t in config.kafka.topics.all()],
                        fast_fsync_off=True)
    yield state
    embedded.down()


def create_database(stack, prefix: str = "test") -> str:
    """A new, empty database on the session's PostgreSQL; its URL (module fixtures call it directly)."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def create():
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = stack.database_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def fresh_database(stack) -> str:
    """A new, empty database on the session's PostgreSQL; its URL."""
    return create_database(stack)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
