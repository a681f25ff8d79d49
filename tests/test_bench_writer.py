"""`rollcall bench writer` on the real broker and PostgreSQL, small: the writer in the benchmark's process,
and a consumer group of two writers in processes of their own, write every event once; the group's members
share the partitions. (The figures themselves are the benchmark's; here only that it measures what it says.)"""

from __future__ import annotations

import asyncio

import pytest

from infra.bench.writer import PEOPLE_PER_ROOM, bench_writer
from infra.foundation.config import EXAMPLE_CONFIG, load_config

pytestmark = pytest.mark.slow

ROOMS = 12  # a camera each: its key spreads the events over the presence topic's partitions


@pytest.mark.parametrize("writers", [1, 2])
def test_bench_writer_writes_every_event_once(stack, writers):
    config = load_config(EXAMPLE_CONFIG, environ={})
    result = asyncio.run(bench_writer(config, stack.database_url, stack.kafka_bootstrap_servers, events=3000,
                                      rooms=ROOMS, writers=writers, say=lambda _message: None))
    assert result["writers"] == writers
    assert result["attendance_rows"] == ROOMS * PEOPLE_PER_ROOM  # everyone was seen, in their own session
    assert result["events_per_s"] > 0 and result["ceiling_rows_per_s"] > 0
    if writers == 1:
        assert "members" not in result
        return
    members = result["members"]
    assert len(members) == 2
    assert sum(m["events"] for m in members) == result["events"]  # all of them, none twice
    assert all(m["events"] > 0 and m["partitions"] > 0 for m in members), members
    # presence (12 partitions) and recognitions (1) shared: 7 and 6 once the group is settled
    assert sorted(m["partitions"] for m in members) == [6, 7]
