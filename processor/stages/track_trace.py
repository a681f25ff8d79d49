"""A room camera's tracker input and output as JSON lines, and their replay (``[tracking] trace_dir``).

Room tracking fails in ways that depend on which frames a loaded machine happened to analyse and on what
the detector said on them, so a failure seen once in a live run or a test suite is rarely seen again on
demand. With ``trace_dir`` set, the room stage writes, per room camera and processor run, one file
``<camera>-<UTC time>-<pid>.jsonl``: a header (the tracker's settings), then per frame the tracker was
given either its detections (box, score, class, the torso look the tracker compared) and the track events
that came out, or ``coast`` (the motion gate found nothing moved). :func:`replay_trace` feeds the same input
to a new :class:`PersonTracker` and gives the events again, so a failure can be replayed, traced frame by
frame and fixed offline (``rollcall bench trace``).

Off by default: the looks are colour histograms of everyone's clothes, worth keeping only while debugging.
Not in the trace: a tracker resumed from another processor's checkpoint (a replay starts empty) and entry
zones changed while running (the header has those at the start).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.foundation.errors import RollcallError
from processor.stages.person_track_parts import TrackEvent
from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetection

TRACE_FORMAT = "rollcall-room-trace/1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def tracker_settings(tracker: PersonTracker) -> dict:
    """What a replay needs to build the same tracker (the settings the room stage builds it with)."""
    return {"camera_id": tracker.camera_id, "fps": tracker.fps, "entry_zones": tracker.entry_zones,
            "lost_after_s": tracker.lost_after_s, "reacquire_s": tracker.reacquire_s,
            "reacquire_heights": tracker.rules.reacquire_heights}


def event_row(event: TrackEvent) -> dict:
    return {"kind": event.kind, "track_id": event.track_id, "pts_s": event.pts_s,
            "box": [round(float(v), 1) for v in event.box], "entered_via": event.entered_via,
            "exited_via": event.exited_via}


class TraceWriter:
    """One room camera's trace file, opened at the first frame; lines are flushed as written (a run that
    is killed keeps what it traced)."""

    def __init__(self, folder: str | os.PathLike, tracker: PersonTracker):
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{_UNSAFE.sub('_', tracker.camera_id)}-{stamp}-{os.getpid()}.jsonl"
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / name
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered
        self._write({"format": TRACE_FORMAT, **tracker_settings(tracker)})

    def _write(self, row: dict) -> None:
        self._file.write(json.dumps(row, separators=(",", ":")) + "\n")

    def frame(self, pts_s: float, detections: Sequence[PersonDetection], looks: Sequence[np.ndarray | None],
              events: Sequence[TrackEvent]) -> None:
        # full floats: a replay must see the boxes and looks the tracker saw, not near ones
        self._write({"pts_s": pts_s, "detections": [
            [[float(v) for v in d.box], float(d.score), int(d.class_id),
             None if look is None else [float(v) or 0 for v in np.ravel(look)]]
            for d, look in zip(detections, looks)], "events": [event_row(e) for e in events]})

    def coast(self, pts_s: float) -> None:
        self._write({"pts_s": pts_s, "coast": True})

    def close(self) -> None:
        self._file.close()


@dataclass
class Trace:
    header: dict
    rows: list[dict]  # per frame: {"pts_s", "detections", "events"} or {"pts_s", "coast": True}
    path: Path


def read_trace(path: Path) -> Trace:
    """A trace file, checked enough that a replay of it cannot fail half way (RollcallError otherwise)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RollcallError(f"cannot read the trace {path}: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == 1:
                raise RollcallError(f"{path} is not a room trace: its first line is not JSON") from None
            if number == len(lines):  # the last line of a killed run may be cut short
                break
            raise RollcallError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(row, dict):
            raise RollcallError(f"{path}:{number}: not a JSON object")
        rows.append((number, row))
    if not rows or rows[0][1].get("format") != TRACE_FORMAT:
        raise RollcallError(f"{path} is not a room trace: its first line must say format {TRACE_FORMAT!r}")
    header = rows[0][1]
    for key in ("camera_id", "fps", "entry_zones", "lost_after_s", "reacquire_s", "reacquire_heights"):
        if key not in header:
            raise RollcallError(f"{path}:1: the header has no {key!r}")
    for number, row in rows[1:]:
        _check_row(path, number, row)
    return Trace(header, [row for _, row in rows[1:]], path)


def _check_row(path: Path, number: int, row: dict) -> None:
    where = f"{path}:{number}"
    if not isinstance(row.get("pts_s"), (int, float)):
        raise RollcallError(f"{where}: no number pts_s")
    if row.get("coast"):
        return
    detections = row.get("detections")
    if not isinstance(detections, list):
        raise RollcallError(f"{where}: neither detections nor coast")
    for d in detections:
        if not (isinstance(d, list) and len(d) == 4 and isinstance(d[0], list) and len(d[0]) == 4
                and isinstance(d[1], (int, float)) and isinstance(d[2], int) and (d[3] is None or isinstance(d[3], list))):
            raise RollcallError(f"{where}: a detection must be [[x1, y1, x2, y2], score, class, look or null]")


def tracker_from(header: dict, tracker_class: type = PersonTracker) -> PersonTracker:
    zones = {door: [tuple(map(float, p)) for p in polygon] for door, polygon in header["entry_zones"].items()}
    return tracker_class(header["camera_id"], float(header["fps"]), zones, lost_after_s=header["lost_after_s"],
                         reacquire_s=header["reacquire_s"], reacquire_heights=header["reacquire_heights"])


def replay_trace(trace: Trace, tracker: PersonTracker | None = None) -> Iterator[tuple[dict, list[TrackEvent], PersonTracker]]:
    """Each traced frame fed to ``tracker`` (default: one built from the header) as the room stage fed it:
    (the frame's row, the events the replay decided on it, the tracker after it)."""
    tracker = tracker or tracker_from(trace.header)
    for row in trace.rows:
        if row.get("coast"):
            tracker.coast(row["pts_s"])
            yield row, [], tracker
            continue
        detections = [PersonDetection(tuple(float(v) for v in box), float(score), int(cls))
                      for box, score, cls, _ in row["detections"]]
        looks = [None if look is None else np.asarray(look, np.float32)
                 for *_, look in row["detections"]]
        yield row, tracker.update(row["pts_s"], detections, looks=looks), tracker
