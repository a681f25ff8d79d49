"""How `rollcall bench capacity` scores one copy of the scenario: only the events of the copy's own cameras,
against the copy's own ground truth, with the scenario runner's scoring (attendance, recognitions, handoff)."""

from __future__ import annotations

import numpy as np

from infra.scenario.attendance import ATTENDED, score_attendance
from infra.scenario.runner import published_after
from infra.scenario.scores import score_handoff, score_recognitions

CRITERIA = {
    "attendance_precision": 1.0,
    "attendance_recall_min": 0.98,
    "door_p95_ms_below": 1000.0,
    "room_p95_ms_below": 2000.0,
    "identities_of_other_copies": 0,
    "door_latency": "published_at - last_seen of each recognition of an enrolled person: the capture of the frame "
                    "that decided it to the event (stream times on the wall clock, so a decoder or queue that falls "
                    "behind counts). An unknown face is decided only once its track has ended (1 s without it), so "
                    "its delay is at least that by design: door_all_p95_ms has every event",
    "room_latency": "published_at - frame_time of each enter, update and identity presence event (exit events are "
                    "left out: they are published when a lost track is given up, seconds after its last frame)",
}


def score_copy(copy, name: str, truth: dict, outcome, other_people: set[str]) -> dict:
    """One copy's figures and whether it passed (``failed``: the criteria it missed, empty when it passed).
    ``other_people``: the ids enrolled in the other copies, which must never turn up on this copy's cameras."""
    recognitions = [e for e in outcome.recognitions if e.get("camera_id") == copy.door_camera]
    presence = [e for e in outcome.presence if e.get("camera_id") == copy.room_camera]
    attendance = score_attendance(outcome.attendance.get(copy.index), truth)
    recognition = score_recognitions(recognitions, truth)
    handoff = score_handoff(presence, truth, outcome.origins.get(copy.index))
    door_ms = _ms([published_after(e, "last_seen") for e in recognitions if e.get("person_id")])
    all_door_ms = _ms([published_after(e, "last_seen") for e in recognitions])
    room_ms = _ms([published_after(e, "frame_time") for e in presence if e.get("kind") != "exit"])
    foreign = sorted({e["person_id"] for e in recognitions + presence if e.get("person_id") in other_people})
    figures = {
        "copy": copy.index, "scenario": name, "room": copy.room,
        "precision": attendance["precision"], "recall": attendance["recall"],
        "expected_present": attendance.get("expected_present", sorted(truth.get("expected_present", []))),
        "attended": sorted(p for p, row in attendance.get("rows", {}).items() if row["status"] in ATTENDED),
        "missed": attendance.get("missed"), "wrongly_present": attendance.get("wrongly_present"),
        "door_p95_ms": _p(door_ms, 95), "door_p50_ms": _p(door_ms, 50), "door_events": len(door_ms),
        "door_all_p95_ms": _p(all_door_ms, 95), "door_all_events": len(all_door_ms),
        "room_p95_ms": _p(room_ms, 95), "room_p50_ms": _p(room_ms, 50), "room_events": len(room_ms),
        "recognition_accuracy": recognition["accuracy"], "recognition_missed": recognition["missed"],
        "recognition_wrong_ids": recognition["wrong_ids"], "handoff_accuracy": handoff["accuracy"],
        "identities_of_other_copies": foreign,
        "frames": {role: _frames(outcome.stats.get(camera, {})) for role, camera in
                   (("door", copy.door_camera), ("room", copy.room_camera))},
        "room_tracking": outcome.room_tracking.get(copy.room_camera),
        "door_slowest": _slowest(recognitions),
    }
    figures["failed"] = _failures(figures)
    figures["passed"] = not figures["failed"]
    return figures


def _failures(figures: dict) -> list[str]:
    """The criteria a copy missed, each in words (a missing figure is a miss)."""
    out = []
    if figures["precision"] != CRITERIA["attendance_precision"]:
        out.append(f"attendance precision {figures['precision']} (wrongly present: {figures['wrongly_present']})")
    if figures["recall"] is None or figures["recall"] < CRITERIA["attendance_recall_min"]:
        out.append(f"attendance recall {figures['recall']} (missed: {figures['missed']})")
    for role in ("door", "room"):
        p95, limit = figures[f"{role}_p95_ms"], CRITERIA[f"{role}_p95_ms_below"]
        if p95 is None or p95 >= limit:
            out.append(f"{role} p95 {p95} ms (limit {limit:g} ms)")
    if figures["identities_of_other_copies"]:
        out.append(f"identities of other copies seen: {figures['identities_of_other_copies']}")
    return out


def _slowest(recognitions: list[dict], count: int = 3) -> list[dict]:
    """The enrolled people's slowest recognitions, with what a delay comes from (a short passage, few frames
    of liveness cues): where to look when a door misses its limit."""
    rows = []
    for event in recognitions:
        delay = published_after(event, "last_seen")
        if event.get("person_id") and delay is not None:
            liveness = event.get("liveness") or {}
            rows.append({"person_id": event["person_id"], "delay_ms": round(delay * 1000.0, 1),
                         "frames": event.get("frames"), "liveness_frames": liveness.get("frames")})
    return sorted(rows, key=lambda row: -row["delay_ms"])[:count]


def _frames(stats: dict) -> dict:
    return {key: stats.get(key) for key in ("decoded", "analysed", "dropped", "reconnects", "last_error")}


def _ms(delays_s: list[float | None]) -> list[float]:
    return [d * 1000.0 for d in delays_s if d is not None]


def _p(values_ms: list[float], q: float) -> float | None:
    return round(float(np.percentile(values_ms, q)), 1) if values_ms else None
