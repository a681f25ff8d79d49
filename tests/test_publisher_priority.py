"""The publisher's priorities during a broker outage, against a real Tansu broker that comes up late: the
bounded buffer keeps attendance evidence over best-effort traffic (overlays, occupancy), evicts the
best-effort events when evidence needs the room, and says what it dropped, by topic (stats, metrics, log)."""

from __future__ import annotations

import logging
import time

import pytest

from schemas import events
from processor.publisher import EventPublisher
from tests.test_publisher import consume, metric_value, own_broker, recognition  # noqa: F401 - own_broker: fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EVIDENCE, OVERLAYS, OCCUPANCY = "rollcall.recognitions.v1", "rollcall.overlays.v1", "rollcall.occupancy.v1"
# the publisher's first send may auto-create a topic (Tansu: 4 partitions) before the test makes it
TOPICS = [(EVIDENCE, 4), (OVERLAYS, 4), (OCCUPANCY, 4)]


def overlay(camera_id: str, seq: int) -> dict:
    return events.build_event("overlay", {
        "camera_id": camera_id, "room_id": "A101", "role": "room", "frame_time": time.time(), "pts_s": float(seq),
        "frame_size": (1280, 720), "objects": []})


def occupancy(camera_id: str) -> dict:
    return events.build_event("occupancy", {
        "room_id": "A101", "camera_id": camera_id, "frame_time": time.time(), "people": 3, "people_avg": 2.5,
        "known": 2, "unknown": 1})


async def test_an_outage_keeps_the_evidence_and_drops_live_views_first(own_broker, caplog):
    caplog.set_level(logging.WARNING, logger="rollcall.publisher")
    publisher = EventPublisher(own_broker.bootstrap, client_id="test-priority", max_buffer=20, retry_backoff_s=0.2,
                               drop_log_interval_s=0.0)
    evicted_before = metric_value("rollcall_publisher_evicted_total", topic=OVERLAYS)
    dropped_before = {t: metric_value("rollcall_events_dropped_total", topic=t) for t in (EVIDENCE, OVERLAYS, OCCUPANCY)}
    await publisher.start()  # the broker is not there yet
    live = [publisher.publish(OVERLAYS, "room-p", overlay("room-p", i), best_effort=True) for i in range(8)]
    # occupancy is best-effort by its type, whoever publishes it (the room stage does not say so)
    rooms = [publisher.publish(OCCUPANCY, "A101", occupancy("room-p")) for _ in range(3)]
    assert live == [True] * 5 + [False] * 3, "best-effort events take at most a quarter of the buffer"
    assert rooms == [False] * 3
    evidence = [publisher.publish(EVIDENCE, "door-p", recognition("door-p", seq)) for seq in range(24)]
    assert evidence == [True] * 20 + [False] * 4, "evidence evicts every best-effort event before any is dropped"
    stats = publisher.stats()
    assert stats["buffered"] == 20 and stats["buffered_best_effort"] == 0
    assert stats["evicted_by_topic"] == {OVERLAYS: 5}
    assert stats["dropped_by_topic"] == {OVERLAYS: 3 + 5, OCCUPANCY: 3, EVIDENCE: 4}
    assert metric_value("rollcall_publisher_evicted_total", topic=OVERLAYS) - evicted_before == 5
    dropped = {t: metric_value("rollcall_events_dropped_total", topic=t) - dropped_before[t] for t in dropped_before}
    assert dropped == {EVIDENCE: 4, OVERLAYS: 8, OCCUPANCY: 3}
    lines = [r.getMessage() for r in caplog.records if "buffer full" in r.getMessage()]
    assert lines and all("dropped" in line for line in lines)
    assert f"{OVERLAYS} " in " ".join(lines) and f"{EVIDENCE} " in " ".join(lines), lines

    # the broker comes: all 20 buffered evidence events arrive, in order; no overlay was left to send
    await own_broker.start(TOPICS)
    assert await publisher.flush(timeout_s=30)
    records = await consume(own_broker.bootstrap, EVIDENCE, 20, camera_prefix="door-p")
    assert [int(events.decode(EVIDENCE, r.value)["track_id"].rsplit("-", 1)[1]) for r in records] == list(range(20))
    assert publisher.stats()["published_by_topic"] == {EVIDENCE: 20}
    await publisher.stop(flush_timeout_s=2)


async def test_best_effort_events_go_after_the_evidence_once_the_broker_is_back(own_broker):
    """With room for both, both are delivered: the evidence first, the best-effort events after it."""
    publisher = EventPublisher(own_broker.bootstrap, client_id="test-order", max_buffer=100, retry_backoff_s=0.2)
    await publisher.start()
    assert all(publisher.publish(OVERLAYS, "room-q", overlay("room-q", i), best_effort=True) for i in range(10))
    assert all(publisher.publish(EVIDENCE, "door-q", recognition("door-q", seq)) for seq in range(30))
    assert publisher.stats()["buffered_best_effort"] == 10
    await own_broker.start(TOPICS)
    assert await publisher.flush(timeout_s=30)
    assert publisher.stats()["published_by_topic"] == {EVIDENCE: 30, OVERLAYS: 10}
    assert publisher.stats()["dropped"] == 0
    await publisher.stop(flush_timeout_s=2)
