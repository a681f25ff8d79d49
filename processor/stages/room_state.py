"""The room stage's per-track state, shared by the stage (processor/stages/room.py) and its part in
processor groups (processor/stages/room_handover.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from processor.appearance import Appearance, mean as mean_appearance


@dataclass
class Live:
    room_id: str
    camera_id: str
    first_seen: float
    last_seen: float
    box: tuple[float, float, float, float]
    frame_size: tuple[int, int]
    last_update: float
    person_id: str | None = None
    identity_source: str = "none"  # "handoff" | "face" | "reacquired" | "none"
    handoff: dict | None = None  # the handoff that gave the identity (kept on later events)
    face_sum: np.ndarray | None = None  # quality-weighted sum of the faces seen on this track
    face_count: int = 0
    face_decided: bool = False  # the room camera's faces decided once per track


@dataclass
class EntryLooks:
    """Clothing descriptors of one entering track: from frames where it stood apart, and from the rest."""

    apart: list = field(default_factory=list)
    touching: list = field(default_factory=list)

    def add(self, look: Appearance, isolated: bool, limit: int) -> None:
        (self.apart if isolated else self.touching).append(look)
        del self.touching[:-limit]

    def done(self, limit: int) -> bool:
        return len(self.apart) >= limit

    def mean(self) -> Appearance | None:
        return mean_appearance(self.apart or self.touching)


def isolated(box, others: np.ndarray, limit: float = 0.05) -> bool:
    """Whether no other detection covers more than ``limit`` of ``box`` (the track's own detection, the
    one that overlaps it most, does not count)."""
    if len(others) == 0:
        return True
    x1, y1, x2, y2 = box
    area = max((x2 - x1) * (y2 - y1), 1e-9)
    w = np.clip(np.minimum(others[:, 2], x2) - np.maximum(others[:, 0], x1), 0, None)
    h = np.clip(np.minimum(others[:, 3], y2) - np.maximum(others[:, 1], y1), 0, None)
    covered = np.sort(w * h / area)[::-1]
    return len(covered) < 2 or covered[1] <= limit
