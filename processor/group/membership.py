"""This processor as a member of its Kafka consumer group: joins, heartbeats, and learns its camera
slots from each rebalance (processor/group/assignor.py decides the split).

The member subscribes to the control topic (one partition per camera slot) and never reads a message
from it; it polls only because aiokafka counts a member that stops polling as gone
(``max_poll_interval``). A dead member is noticed by the coordinator after ``session_timeout_s``; the
others rejoin and the leader deals its slots out again.

Rebalances are eager in aiokafka (every member gives up its partitions before rejoining), so the member
keeps running its cameras through the revocation and changes only what the new assignment changes:
sticky slots mean a rebalance stops nothing on members that keep their share.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra.foundation.errors import RollcallError
from infra.foundation.retry import connected, reconnecting
from processor.group.assignor import make_assignor

log = logging.getLogger("rollcall.group")


class _Listener(ConsumerRebalanceListener):
    def __init__(self, member: "GroupMember"):
        self.member = member

    async def on_partitions_revoked(self, revoked) -> None:
        pass  # keep running: the next assignment decides what stops

    async def on_partitions_assigned(self, assigned) -> None:
        slots = sorted(tp.partition for tp in assigned if tp.topic == self.member.topic)
        self.member.generation += 1
        await self.member.on_slots(set(slots))


class GroupMember:
    """One member of the processor group ``group`` on the control topic ``topic``."""

    def __init__(self, bootstrap_servers: str, group: str, topic: str, *, name: str, capacity: float,
                 costs: Callable[[], Mapping[int, float]], on_slots: Callable[[set[int]], Awaitable[None]],
                 session_timeout_s: float, heartbeat_s: float, client_id: str = "rollcall",
                 security_protocol: str = "PLAINTEXT", wants_standby: Callable[[], Iterable[int]] = tuple):
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.topic = topic
        self.name = name
        self.on_slots = on_slots
        self.generation = 0  # assignments received so far
        self._assignor = make_assignor(topic, name=name, capacity=capacity, costs=costs, wants_standby=wants_standby)
        self._options = dict(client_id=f"{client_id}-{name}", security_protocol=security_protocol,
                             session_timeout_ms=int(session_timeout_s * 1000),
                             heartbeat_interval_ms=int(heartbeat_s * 1000),
                             rebalance_timeout_ms=int(max(session_timeout_s, 10.0) * 1000),
                             enable_auto_commit=False, auto_offset_reset="latest")

    @property
    def standby(self) -> set[int]:
        """The slots this member keeps a standby of (from the last assignment)."""
        return set(self._assignor.state["standby"])

    async def check_topic(self) -> int:
        """The control topic's partition count (the slot count); a clear error when it does not exist."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self._options["client_id"],
                                    security_protocol=self._options["security_protocol"])
        try:
            await admin.start()
            described = await admin.describe_topics([self.topic])
        except KafkaError as exc:
            raise RollcallError(f"group {self.group}: cannot reach Kafka at {self.bootstrap_servers} ({exc})") from None
        finally:
            await admin.close()
        partitions = [p for info in described if info.get("error_code", 0) == 0 for p in info.get("partitions") or []]
        if not partitions:
            raise RollcallError(f"group {self.group}: the control topic {self.topic} does not exist: create it with "
                                "one partition per camera slot ([kafka.topics.camera_slots] partitions)")
        return len(partitions)

    async def run(self) -> None:
        """Be a member until cancelled; a lost broker is retried, and the slots stay as they were meanwhile."""
        async for attempt in reconnecting(what=f"group {self.group}", errors=(KafkaError, OSError), log=log):
            with attempt:
                consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=self.group,
                                            partition_assignment_strategy=(self._assignor,), **self._options)
                await consumer.start()
                try:
                    consumer.subscribe([self.topic], listener=_Listener(self))
                    connected(attempt)
                    log.info("group %s: %s joined", self.group, self.name)
                    while True:
                        await consumer.getmany(timeout_ms=1000)
                finally:
                    await asyncio.shield(_stop(consumer))


async def _stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()  # leaves the group: the others rebalance at once instead of after the timeout
    except Exception as exc:  # noqa: BLE001 - stopping must not raise over the real error
        log.warning("group: leaving failed: %s", exc)
