"""The writer's read-ahead (consumers.read_ahead) on a stand-in consumer: records handed out in order, at
most max_records held, a seek's partition dropped, a failure of the consumer raised in the loop."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import pytest
from aiokafka import TopicPartition

from consumers.consumer_loop import ConsumerLoop
from consumers.read_ahead import ReadAhead
from infra.foundation.config import AttendanceWriterConfig

Record = namedtuple("Record", "offset")
TP0, TP1 = TopicPartition("presence", 0), TopicPartition("presence", 1)


class StandInConsumer:
    """getmany hands out the queued fetches one by one (at most max_records of each), then waits."""

    def __init__(self, fetches: list[dict]):
        self.fetches = fetches
        self.asked: list[int] = []  # max_records of every call
        self.failure: BaseException | None = None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.asked.append(max_records)
        if self.failure is not None:
            raise self.failure
        if not self.fetches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        fetch = self.fetches.pop(0)
        return {tp: records[:max_records] for tp, records in fetch.items()}


def _records(first: int, count: int) -> list[Record]:
    return [Record(offset) for offset in range(first, first + count)]


def _offsets(taken: dict) -> dict:
    return {tp: [[r.offset for r in chunk] for chunk in chunks] for tp, chunks in taken.items()}


def test_records_are_read_ahead_and_handed_out_in_offset_order_per_partition():
    async def scenario():
        consumer = StandInConsumer([{TP0: _records(0, 3), TP1: _records(10, 2)}, {TP0: _records(3, 2)}])
        ahead = ReadAhead(consumer, max_records=100, wait_ms=10)
        ahead.start()
        try:
            await asyncio.sleep(0.05)  # both fetches read before anything is taken
            return _offsets(await ahead.take(1.0)), _offsets(await ahead.take(0.02))
        finally:
            await ahead.close()

    first, second = asyncio.run(scenario())
    assert first == {TP0: [[0, 1, 2], [3, 4]], TP1: [[10, 11]]}
    assert second == {}  # nothing more came within the wait


def test_at_most_max_records_wait_and_taking_makes_room_again():
    async def scenario():
        consumer = StandInConsumer([{TP0: _records(0, 6)}, {TP0: _records(6, 6)}, {TP0: _records(12, 6)}])
        ahead = ReadAhead(consumer, max_records=8, wait_ms=10)
        ahead.start()
        try:
            await asyncio.sleep(0.05)
            held = _offsets(await ahead.take(1.0))
            await asyncio.sleep(0.05)
            return held, _offsets(await ahead.take(1.0)), consumer.asked
        finally:
            await ahead.close()

    held, later, asked = asyncio.run(scenario())
    assert held == {TP0: [[0, 1, 2, 3, 4, 5], [6, 7]]}  # 6, then only the 2 left of the 8 allowed
    assert asked[:2] == [8, 2]
    assert later == {TP0: [[12, 13, 14, 15, 16, 17]]}  # the stand-in dropped 8..11 (its max_records cut)


def test_a_discarded_partition_loses_what_was_read_of_it_and_the_others_keep_theirs():
    async def scenario():
        consumer = StandInConsumer([{TP0: _records(0, 4), TP1: _records(0, 4)}])
        ahead = ReadAhead(consumer, max_records=8, wait_ms=10)
        ahead.start()
        try:
            await asyncio.sleep(0.05)
            ahead.discard(TP0)  # as a seek of TP0 does
            ahead.discard(TopicPartition("presence", 7))  # nothing read of it: nothing happens
            consumer.fetches.append({TP0: _records(2, 2)})  # read from the position sought
            await asyncio.sleep(0.05)
            return _offsets(await ahead.take(1.0))
        finally:
            await ahead.close()

    assert asyncio.run(scenario()) == {TP1: [[0, 1, 2, 3]], TP0: [[2, 3]]}


def test_a_failure_of_the_consumer_is_raised_by_take():
    async def scenario():
        consumer = StandInConsumer([])
        consumer.failure = RuntimeError("coordinator says no")
        ahead = ReadAhead(consumer, max_records=8, wait_ms=10)
        ahead.start()
        try:
            await ahead.take(1.0)
        finally:
            await ahead.close()

    with pytest.raises(RuntimeError, match="coordinator says no"):
        asyncio.run(scenario())


def test_the_loop_keeps_only_records_that_continue_from_where_reading_left_off():
    loop = ConsumerLoop(StandInConsumer([]), AttendanceWriterConfig(), reader=None, batches=None, database_url="",
                        stats=None, health=None, stop=asyncio.Event(), stored=asyncio.Event())
    loop._read_next = {TP0: 5, TP1: None}
    kept = loop._contiguous({
        TP0: [_records(3, 4), _records(7, 2), _records(0, 8)],  # from before 5; then a fetch from a reset position
        TP1: [_records(0, 2)],
        TopicPartition("presence", 2): [_records(0, 2)],  # not assigned (yet): its listener seeks
    })
    assert {tp: [r.offset for r in records] for tp, records in kept.items()} == {TP0: [5, 6, 7, 8], TP1: [0, 1]}
    assert loop._read_next == {TP0: 9, TP1: 2}
