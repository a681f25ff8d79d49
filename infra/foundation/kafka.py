"""Kafka plumbing every service shares: reading a topic from its end ("what is published from now on").

The room stage's recognition feed, the dashboard's live feed and the scenario runner's event reader all
read without a consumer group: every partition assigned by hand, positioned at the end before the
first read, so "ready" means "reading from now" and nothing published later is missed.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError


class TopicsMissing(KafkaError):
    """None of the topics asked for exists on the broker."""


def tail_consumer(bootstrap_servers: str, **options) -> AIOKafkaConsumer:
    """A consumer without a group (no commits, no rebalances) for :func:`assign_from_end`."""
    options.setdefault("enable_auto_commit", False)
    options.setdefault("auto_offset_reset", "latest")
    return AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, **options)


async def assign_from_end(consumer: AIOKafkaConsumer, topics: list[str] | tuple[str, ...]) -> list[TopicPartition]:
    """Assign every partition of ``topics`` to the started ``consumer`` and pin its position at the end
    now. A topic not in the consumer's metadata is looked up once more; raises :class:`TopicsMissing`
    when none of them exists."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            await consumer.topics()  # refresh the metadata once: the topic may be new
            ids = consumer.partitions_for_topic(topic) or set()
        partitions += [TopicPartition(topic, p) for p in sorted(ids)]
    if not partitions:
        raise TopicsMissing(f"none of the topics exist on the broker: {', '.join(topics)}")
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve the end now, before anyone publishes what we must see
    return partitions
