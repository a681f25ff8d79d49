"""The room tracker's trace ([tracking] trace_dir): the room stage writes its tracker's input and events,
and a replay through a new tracker decides the same events, or names the first frame where it does not.
Pure logic on a scripted scene: two people in different clothes come in through the example config's
entry zone, one crosses in front of the other, both sit still (coasted frames), one is hidden and seen
again."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from infra.bench.trace_replay import format_report, replay_report
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from infra.foundation.errors import RollcallError
from processor.frames import Frame
from processor.stages.persons import PersonDetection
from processor.stages.room import RoomStage
from processor.stages.track_trace import TRACE_FORMAT, read_trace

FPS = 4.0
COLOURS = {"red": (30, 30, 220), "blue": (220, 60, 30)}


def _boxes_at(t: float) -> dict[str, tuple[float, float, float, float]]:
    """red enters at 0 s and walks right to x 900; blue enters at 1.5 s and walks to x 400, crossing red's
    path; both still from 5 s; red hidden from 8 to 10.5 s (lost, then reacquired)."""
    boxes = {}
    for name, start, end_x in (("red", 0.0, 900.0), ("blue", 1.5, 400.0)):
        if t < start or (name == "red" and 8.0 <= t < 10.5):
            continue
        s = min(1.0, (t - start) / 3.5)
        fx, fy = 170 + s * (end_x - 170), 420 + s * 180
        height = 230 + s * 70
        boxes[name] = (fx - 45, fy - height, fx + 45, fy)
    return boxes


def _frame(boxes: dict) -> np.ndarray:
    image = np.full((720, 1280, 3), 90, np.uint8)
    for name, (x1, y1, x2, y2) in boxes.items():
        image[int(y1):int(y2), int(x1):int(x2)] = COLOURS[name]
    return image


def _traced_run(folder) -> RoomStage:
    config = load_config(EXAMPLE_CONFIG, environ={"ROLLCALL__TRACKING__TRACE_DIR": str(folder)})
    stage = RoomStage(config, publish=lambda *a, **k: True, topic="presence", recognitions=asyncio.Queue())
    base = time.time() - 120.0
    for n in range(int(12 * FPS)):
        t = n / FPS
        boxes = _boxes_at(t)
        still = 5.5 <= t < 7.5 and n % 2  # every other frame of a still stretch: the motion gate coasts it
        detections = None if still else [PersonDetection(b, 0.9, 0) for b in boxes.values()]
        stage.handle([(Frame("room-a101", n, t, base + t, _frame(boxes)), detections, [])])
    return stage


def test_a_traced_room_camera_replays_to_the_same_events(tmp_path):
    stage = _traced_run(tmp_path)
    (path,) = tmp_path.glob("room-a101-*.jsonl")
    assert stage.traces["room-a101"].path == path
    trace = read_trace(path)
    assert trace.header["format"] == TRACE_FORMAT and trace.header["fps"] == stage.trackers["room-a101"].fps
    assert sum(1 for r in trace.rows if r.get("coast")) == 4
    traced_events = [e["kind"] for r in trace.rows for e in r.get("events", [])]
    assert traced_events.count("appeared") == 2 and "lost" in traced_events and "reacquired" in traced_events
    looks = [d[3] for r in trace.rows for d in r.get("detections", [])]
    assert looks and all(look is not None and len(look) == 128 for look in looks)

    report = replay_report(path)
    assert report["faithful"], report["first_difference"]
    assert report["events"]["appeared"] == 2 and report["coasted"] == 4
    assert "the same events as traced" in format_report(report)


def test_a_replay_that_decides_otherwise_names_the_frame(tmp_path):
    _traced_run(tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines[1:], 1):  # blue's first sighting moved far from the entry zone
        row = json.loads(line)
        if row.get("detections") and len(row["detections"]) == 2:
            row["detections"][1][0] = [1000.0, 100.0, 1090.0, 400.0]
            lines[i] = json.dumps(row)
            moved_at = row["pts_s"]
            break
    path.write_text("\n".join(lines) + "\n")
    report = replay_report(path)
    assert not report["faithful"]
    assert report["first_difference"]["pts_s"] >= moved_at
    assert "DIFFERS" in format_report(report)


def test_a_trace_cut_short_replays_and_a_broken_one_is_refused_in_one_line(tmp_path):
    _traced_run(tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a run killed mid-line
    assert replay_report(path)["frames"] == len(text.splitlines()) - 2
    lines = text.splitlines()
    lines[3] = json.dumps({"pts_s": 1.0, "detections": [[[1, 2, 3], 0.9, 0, None]]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RollcallError, match=r":4: a detection must be"):
        read_trace(path)
    path.write_text(json.dumps({"format": "something else"}) + "\n")
    with pytest.raises(RollcallError, match="not a room trace"):
        read_trace(path)


def test_without_trace_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(EXAMPLE_CONFIG, environ={})
    assert config.tracking.trace_dir is None
    stage = RoomStage(config, publish=lambda *a, **k: True, topic="presence", recognitions=asyncio.Queue())
    stage.handle([(Frame("room-a101", 0, 0.0, time.time(), _frame(_boxes_at(0.0))),
                   [PersonDetection(_boxes_at(0.0)["red"], 0.9, 0)], [])])
    assert stage.traces == {} and list(tmp_path.iterdir()) == []
