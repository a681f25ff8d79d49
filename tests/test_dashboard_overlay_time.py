"""The live video draws each frame with the overlay analysed nearest that frame's capture time (pure
logic of the dashboard's event hub, real overlay.v1 events)."""

from __future__ import annotations

import time

from infra.devstack import dashboard as testing
from dashboard.live import LiveHub


def _overlay(frame_time: float, label: str) -> dict:
    return testing.make_event("overlay", camera_id="room-a101", room_id="A101", role="room", frame_time=frame_time,
                              objects=[{"track_id": "7", "kind": "person", "label": label, "person_id": None,
                                        "box": {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 80.0}}])


def test_overlay_nearest_the_frame_time_else_the_newest():
    hub = LiveHub("127.0.0.1:9", {"overlays": "rollcall.overlays.v1"})
    now = time.time()
    for k in range(10):  # 4 per second, the last one 0.25 s ago
        hub.ingest(_overlay(now - 2.5 + k * 0.25, f"at-{k}"))
    label = lambda event: event["objects"][0]["label"]  # noqa: E731
    assert label(hub.latest_overlay("room-a101")) == "at-9"  # no frame time: the newest
    assert label(hub.latest_overlay("room-a101", now - 1.0)) == "at-6"  # the analysis of that moment
    assert label(hub.latest_overlay("room-a101", now - 1.9)) == "at-2"
    assert label(hub.latest_overlay("room-a101", now - 30.0)) == "at-9"  # nothing near: the newest
    assert hub.latest_overlay("door-a101", now) is None
