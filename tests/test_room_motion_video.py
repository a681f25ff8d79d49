"""The motion gate on real video: the default scenario's rendered room camera (``rollcall scenario render``
output, cached under var/scenarios), at 5 fps. Track boxes are the renderer's ground truth as of the last
frame the gate let through (what the tracker would know then). While nobody moves the gate coasts; the
first frames of each person coming in through the door are detected."""

from __future__ import annotations

import json

import av
import pytest

from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.mounts import render_cached
from processor.stages.motion import MotionGate, MotionSettings

FPS = 5.0


@pytest.fixture(scope="module")
def scenario():
    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    truth = json.loads(rendered.ground_truth_path.read_text())
    return rendered.room_video, truth


def _boxes_at(truth: dict, t: float) -> list[tuple[float, float, float, float]]:
    """Ground-truth boxes (x1, y1, x2, y2) of the people visible in the room at stream time ``t``."""
    boxes = []
    for person in truth["people"]:
        room = person.get("room") or {}
        samples = [s for s in room.get("track", []) if abs(s["t"] - t) < 0.26 and s.get("visible", 1.0) > 0.2]
        if samples:
            x, y, w, h = min(samples, key=lambda s: abs(s["t"] - t))["box"]
            boxes.append((x, y, x + w, y + h))
    return boxes


def test_gate_coasts_a_still_room_and_detects_every_entry(scenario):
    video, truth = scenario
    zone = truth["cameras"]["room"]["entry_zone"]
    gate = MotionGate(MotionSettings(), {"door": zone})
    step = int(round(truth["scenario"]["fps"] / FPS))
    decisions: dict[float, str] = {}
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step:
                continue
            t = round(i / truth["scenario"]["fps"], 2)
            if t > 40.0:
                break
            decision = gate.decide(frame.to_ndarray(format="bgr24"), t)
            decisions[t] = decision.reason
            if decision.detect:
                gate.boxes = tuple(_boxes_at(truth, t))
    first_in = min(p["room"]["t_appear"] for p in truth["people"] if p.get("room"))
    quiet = [reason for t, reason in decisions.items() if 0 < t < first_in - 0.5]
    # the empty room before anybody comes in: only the max_skip_s runs
    assert quiet.count("still") >= len(quiet) - len(quiet) // 9 - 1, quiet
    for person in truth["people"]:
        room = person.get("room")
        if not room or room.get("t_enter_zone") is None:
            continue
        visible = [s["t"] for s in room["track"] if s.get("visible", 0.0) >= 0.5]
        first_seen = min(visible)
        entering = [reason for t, reason in decisions.items() if first_seen - 0.01 <= t <= first_seen + 0.41]
        # the first frames with the person in view through the door reach the detector
        assert entering and all(reason != "still" for reason in entering[:2]), (person["id"], first_seen, entering)
    coasted = sum(1 for reason in decisions.values() if reason == "still")
    assert coasted / len(decisions) >= 0.4, decisions  # most of a seated class is still
