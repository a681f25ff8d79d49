"""Failover figures from the processors' status events (schemas/processor_status.v1.json): per camera,
the longest time it went unanalysed (from one analysed frame to the next, whichever member analysed
them) and any time two members analysed it at once.

A member SIGKILLed never sends the status of its last period, so the frames it analysed after its last
status are unseen here: a gap across a kill is over-stated by at most one status period, never under-stated.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Period:
    processor: str
    camera_id: str
    first: float  # capture time of its first analysed frame (Unix seconds)
    last: float
    frames: int
    max_gap_s: float  # within the period, and from the same member's previous frame


def _time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def periods_of(statuses: list[dict]) -> list[Period]:
    """Every (member, camera) period with analysed frames."""
    periods = []
    for status in statuses:
        for camera in status.get("cameras", []):
            if camera.get("frames", 0) > 0 and camera.get("first_frame_time") and camera.get("last_frame_time"):
                periods.append(Period(status["processor_id"], camera["camera_id"], _time(camera["first_frame_time"]),
                                      _time(camera["last_frame_time"]), int(camera["frames"]),
                                      float(camera.get("max_gap_s", 0.0))))
    return periods


def camera_gaps(periods: list[Period], camera_id: str, until: float | None = None) -> dict:
    """The camera's longest unanalysed stretch, from its first analysed frame to its last (or to ``until``,
    the end of the run, when that is later), and the members that analysed it, in order."""
    mine = sorted((p for p in periods if p.camera_id == camera_id), key=lambda p: p.first)
    if not mine:
        return {"max_gap_s": None, "owners": [], "frames": 0}
    longest, where = 0.0, None
    reached = mine[0].first
    for period in mine:
        # a member's own gaps inside its periods (and across its own consecutive periods) ...
        if period.max_gap_s > longest:
            longest, where = period.max_gap_s, period.first
        # ... and the stretch no member covered, e.g. from a killed member's last frame to its successor's first
        if period.first - reached > longest:
            longest, where = period.first - reached, reached
        reached = max(reached, period.last)
    if until is not None and until - reached > longest:
        longest, where = until - reached, reached
    owners = []
    for period in mine:
        if not owners or owners[-1] != period.processor:
            owners.append(period.processor)
    return {"max_gap_s": round(longest, 2), "gap_started_at": where, "owners": owners,
            "frames": sum(p.frames for p in mine)}


def double_analysis(periods: list[Period], camera_id: str, after: float) -> float:
    """Seconds, after ``after``, during which two different members both analysed the camera."""
    mine = [p for p in periods if p.camera_id == camera_id and p.last > after]
    overlap = 0.0
    for i, a in enumerate(mine):
        for b in mine[i + 1:]:
            if a.processor != b.processor:
                overlap += max(0.0, min(a.last, b.last) - max(a.first, b.first, after))
    return round(overlap, 2)
