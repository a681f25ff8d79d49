"""The parts a room camera's person tracks are made of: the track, its events, and the box measures the
tracker and its rules share (feet, torso look, overlap). No tracking logic lives here; see
:mod:`processor.stages.person_tracks`."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

EVENT_KINDS = ("appeared", "lost", "reacquired", "exited")

Box = tuple[float, float, float, float]


@dataclass
class PersonTrack:
    """One Rollcall person track on one room camera."""

    track_id: str
    camera_id: str
    first_pts_s: float
    last_pts_s: float
    box: Box  # last box seen
    entered_via: str | None = None
    identity: str | None = None  # set by others (door handoff, review); never by the tracker
    identity_source: str | None = None
    state: str = "active"  # "active" | "lost" | "exited"
    lost_since_s: float | None = None
    reacquisitions: int = 0
    tracker_ids: list[int] = field(default_factory=list)  # library ids that made up this track
    velocity: tuple[float, float] = (0.0, 0.0)  # of the feet, pixels per second (smoothed)
    look: np.ndarray | None = None  # colour signature of the torso (hue-saturation histogram), smoothed
    crowd_look: np.ndarray | None = None  # the last one from a shared box, while it has no look of its own
    in_room: bool = False  # seen with the feet outside every entry zone at least once
    missed: int = 0  # analysed frames since it was last seen
    still_at: tuple[float, float] | None = None  # the feet's place since still_since (within still_radius)
    still_since: float | None = None

    def unseen_s(self, pts_s: float) -> float:
        """Stream time since it was last seen (a coasted frame sees again whoever the detector saw last)."""
        return pts_s - self.last_pts_s

    @property
    def foot(self) -> tuple[float, float]:
        return foot(self.box)


@dataclass(frozen=True)
class TrackEvent:
    kind: str  # one of EVENT_KINDS
    camera_id: str
    track_id: str
    pts_s: float  # stream time of the frame the event was decided on (appeared: of the first sighting)
    box: Box  # the track's box (last one seen for lost / exited)
    entered_via: str | None = None
    exited_via: str | None = None
    last_seen_pts_s: float | None = None
    identity: str | None = None
    identity_source: str | None = None


def torso_look(image: np.ndarray, box) -> np.ndarray | None:
    """Hue-saturation histogram of the torso (the middle of the box), or None when the box is too small."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    top, bottom = int(max(0, y1 + 0.15 * h)), int(min(image.shape[0], y1 + 0.6 * h))
    left, right = int(max(0, x1 + 0.25 * w)), int(min(image.shape[1], x2 - 0.25 * w))
    if bottom - top < 4 or right - left < 4:
        return None
    hsv = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1).ravel()


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two torso looks (0: alike, 1: nothing in common)."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def box_key(box) -> tuple[int, ...]:
    return tuple(int(round(float(v) * 4)) for v in box)


def foot(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, box[3]


def foot_distance(a: Box, b: Box) -> float:
    (ax, ay), (bx, by) = foot(a), foot(b)
    return float(np.hypot(ax - bx, ay - by))


def reach_ratio(seen_pts: float, seen_box: Box, pts_s: float, box: Box) -> float:
    """How far feet at ``seen_box`` are from ``box`` against how far they could have come by now (<= 1:
    within reach): half a box height, plus a brisk walk (a box height a second) for the time since."""
    return foot_distance(seen_box, box) / max(1.0, (box[3] - box[1]) * (0.5 + 1.0 * abs(pts_s - seen_pts)))


def isolated(boxes: np.ndarray, all_boxes: np.ndarray, limit: float = 0.3) -> list[bool]:
    """For each tracked box: no other detection of the frame covers more than ``limit`` of it or of itself
    (a box shared by two people would teach a track the other's look). 0.3, not less: people who come in
    together always overlap a little, and a track that never learnt a look cannot be picked up on it
    after the crowd hid it (bench tracking on class-rush: 100 -> 102 of 102 entries at 4 fps, 97 -> 99 at
    3; default and hard-cases unchanged or better); the torso crop is the box's middle, which a 30 %
    overlap at a side leaves mostly to its owner."""
    if not len(boxes) or not len(all_boxes):
        return [True] * len(boxes)
    w = np.minimum(boxes[:, None, 2], all_boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], all_boxes[None, :, 0])
    h = np.minimum(boxes[:, None, 3], all_boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], all_boxes[None, :, 1])
    inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    area_a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_b = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    overlaps = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    itself = np.all(np.abs(boxes[:, None, :] - all_boxes[None, :, :]) <= 1.0, axis=2)  # its own detection
    overlaps[itself] = 0.0
    return [bool(row.max(initial=0.0) <= limit) for row in overlaps]


def _inside(box: np.ndarray, others: np.ndarray, grid: int) -> np.ndarray:
    """Which of a ``grid`` x ``grid`` lattice of points inside ``box`` each of ``others`` holds: (k, grid y, grid x)."""
    steps = (np.arange(grid) + 0.5) / grid
    x1, y1, x2, y2 = box
    xs, ys = x1 + steps * (x2 - x1), y1 + steps * (y2 - y1)
    inside_x = (xs[None, :] >= others[:, 0, None]) & (xs[None, :] <= others[:, 2, None])  # (k, grid)
    inside_y = (ys[None, :] >= others[:, 1, None]) & (ys[None, :] <= others[:, 3, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


def covered_share(boxes: np.ndarray, scores: np.ndarray, grid: int = 12, among: np.ndarray | None = None) -> np.ndarray:
    """For each box, the share of its area the boxes scored above it cover together (sampled on a
    ``grid`` x ``grid`` lattice of points inside it); only for the boxes ``among`` marks (a boolean mask;
    the others read 0)."""
    shares = np.zeros(len(boxes))
    for i in np.flatnonzero(np.ones(len(boxes), bool) if among is None else among):
        higher = boxes[scores > scores[i]]
        if len(higher):
            shares[i] = np.any(_inside(boxes[i], higher, grid), axis=0).mean()
    return shares


def spans_others(boxes: np.ndarray, among: np.ndarray, share: float, grid: int = 12) -> np.ndarray:
    """For each box ``among`` marks: whether the other marked boxes cover at least ``share`` of it together
    while none of them covers that much alone: a box over two or more people who have boxes of their own,
    whatever its score (a box mostly inside one other is a person half hidden by a nearer one)."""
    spans = np.zeros(len(boxes), bool)
    marked = np.flatnonzero(among)
    for i in marked:
        others = boxes[marked[marked != i]]
        if len(others) < 2:
            continue
        inside = _inside(boxes[i], others, grid)
        spans[i] = inside.any(axis=0).mean() >= share and inside.mean(axis=(1, 2)).max() < share
    return spans
