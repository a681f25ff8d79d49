"""Who is who after a room camera moved to another processor: the tracks of the old owner's checkpoint
against the new tracks the new owner sees in its first frames.

The camera went unanalysed for the failover gap (seconds), so the usual reacquisition reach (a fraction of
a box height) is too short for anyone who was walking: here the reach grows with the gap at a brisk walk,
and the torso colour signature has to agree unless the person is found right where they were. The pairs
are chosen jointly (Hungarian), so two newcomers never both claim one checkpointed track and the best
overall pairing wins, not the first box looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ResumeRules:
    walk_heights_per_s: float = 1.0  # how far someone may have walked during the gap, box heights a second
    near_heights: float = 0.6  # found this close to where they were: the same person whatever the look
    max_look_distance: float = 0.3  # Bhattacharyya distance of torso signatures that still agree
    height_factor: float = 1.6  # box heights within this factor (someone who sat down is a third shorter)
    position_weight: float = 0.3  # of the walked distance (in reaches) against the look distance


def _foot(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, box[3]


def _cost(track_box: Box, track_look, gap_s: float, box: Box, look, rules: ResumeRules) -> float | None:
    """The cost of pairing a checkpointed track with a new box; None when they cannot be the same person."""
    height = max(1.0, track_box[3] - track_box[1])
    ratio = (box[3] - box[1]) / height
    if not 1 / rules.height_factor <= ratio <= rules.height_factor:
        return None
    (tx, ty), (fx, fy) = _foot(track_box), _foot(box)
    distance = float(np.hypot(fx - tx, fy - ty)) / height  # in box heights
    reach = rules.near_heights + rules.walk_heights_per_s * gap_s
    if distance > reach:
        return None
    near = distance <= rules.near_heights
    if track_look is None or look is None:
        return rules.position_weight * distance / reach if near else None
    look_distance = float(cv2.compareHist(np.asarray(track_look, np.float32), np.asarray(look, np.float32),
                                          cv2.HISTCMP_BHATTACHARYYA))
    if look_distance > rules.max_look_distance and not near:
        return None
    return look_distance + rules.position_weight * distance / reach


def resume_pairs(tracks: Sequence[tuple[Box, object, float]], boxes: Sequence[tuple[Box, object]],
                 rules: ResumeRules = ResumeRules()) -> dict[int, int]:
    """New box index -> checkpointed track index. ``tracks``: (box, look, seconds since it was last seen);
    ``boxes``: (box, look) of the new tracks."""
    if not tracks or not boxes:
        return {}
    big = 1e6
    cost = np.full((len(boxes), len(tracks)), big)
    for i, (box, look) in enumerate(boxes):
        for j, (track_box, track_look, gap_s) in enumerate(tracks):
            c = _cost(track_box, track_look, gap_s, box, look, rules)
            if c is not None:
                cost[i, j] = c
    rows, cols = linear_sum_assignment(cost)
    return {int(i): int(j) for i, j in zip(rows, cols) if cost[i, j] < big}
