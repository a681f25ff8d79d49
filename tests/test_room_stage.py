"""The room stage on a scripted walk (pure logic, real schemas): a person enters through the example
config's entry zone, gets the door's recognition by handoff, is hidden for 3 s and picked up again with
the identity carried over; presence, occupancy (once a second) and overlay (every frame) events all
match their schemas."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from infra.foundation.config import EXAMPLE_CONFIG, load_config
from schemas.events import validate
from processor.frames import Frame
from processor.stages.persons import PersonDetection
from processor.stages.recognition_feed import DoorRecognition
from processor.stages.room import RoomStage

FPS = 5.0


def _box_at(t: float) -> tuple[float, float, float, float] | None:
    """Feet in the entry zone at t=0, walking to (600, 600) by t=2, standing; hidden from 6 s to 9 s."""
    if 6.0 <= t < 9.0:
        return None
    s = min(1.0, t / 2.0)
    fx, fy = 170 + s * (600 - 170), 420 + s * (600 - 420)
    height = 230 + s * 70
    return (fx - 45, fy - height, fx + 45, fy)


def test_room_stage_events_on_a_scripted_walk():
    config = load_config(EXAMPLE_CONFIG, environ={})
    published: list[tuple[str, str, dict]] = []
    recognitions: asyncio.Queue = asyncio.Queue()
    stage = RoomStage(config, publish=lambda topic, key, event, **_: published.append((topic, key, event)) or True,
                      topic="presence", recognitions=recognitions, occupancy_topic="occupancy",
                      overlay_topic="overlays")
    base = time.time() - 120.0  # the frames are from the past: every handoff window has closed by now
    recognitions.put_nowait(DoorRecognition("door-a101", "macron", "00000000-0000-4000-8000-000000000001",
                                            door_time=base - 6.5))
    image = np.zeros((720, 1280, 3), np.uint8)
    for n in range(int(14 * FPS)):
        t = n / FPS
        box = _box_at(t)
        detections = [PersonDetection(box, 0.9, 0)] if box else []
        stage.handle([(Frame("room-a101", n, t, base + t, image), detections, [])])

    for _, _, event in published:
        validate(event, unpublished=True)
    presence = [e for topic, _, e in published if topic == "presence"]
    kinds = [(e["kind"], e["person_id"], e["identity_source"]) for e in presence]
    assert kinds[0] == ("enter", None, "none")
    assert ("identity", "macron", "handoff") in kinds
    handoff = next(e for e in presence if e["kind"] == "identity")
    assert handoff["handoff"]["door_id"] == "A101-main" and 5.0 <= handoff["handoff"]["transit_s"] <= 8.0
    # Lost while hidden (no exit: it came back within tracking.reacquire_s), same track, identity kept.
    assert all(e["kind"] != "exit" for e in presence)
    assert len({e["track_id"] for e in presence}) == 1
    assert kinds[-1] == ("update", "macron", "reacquired")
    assert presence[-1]["handoff"] is None

    occupancy = [e for topic, key, e in published if topic == "occupancy"]
    assert all(key == "A101" for topic, key, _ in published if topic in ("occupancy", "presence"))
    assert 13 <= len(occupancy) <= 15  # once a second of frame time over 14 s
    assert occupancy[0]["people"] == 0  # the first frame: the track is not confirmed yet
    assert occupancy[1]["people"] == 1 and occupancy[1]["known"] == 0 and occupancy[1]["unknown"] == 1
    assert occupancy[-1]["people"] == 1 and occupancy[-1]["known"] == 1
    assert 0.0 < occupancy[1]["people_avg"] <= 1.0

    overlays = [e for topic, _, e in published if topic == "overlays"]
    assert len(overlays) == int(14 * FPS)  # one per analysed frame, empty while the person is unseen
    labels = [[o["label"] for o in e["objects"]] for e in overlays]
    assert labels[-1] == ["macron"] and overlays[-1]["objects"][0]["kind"] == "person"
    assert [] in labels  # hidden: nothing drawn
    assert overlays[-1]["frame_size"] == {"width": 1280, "height": 720}
    # Every frame reached the tracker, evenly spaced: what rollcall_tracking_frame_gap_seconds watches.
    assert stage.frames_tracked == {"room-a101": int(14 * FPS)}
    assert abs(stage.max_gap_s["room-a101"] - 1 / FPS) < 1e-6
