"""How a room camera's person tracker associates boxes frame to frame: the ``trackers`` library's tracker
(ByteTrack, BoT-SORT or OC-SORT) with :class:`ReachSimilarity` as its box similarity. Why this
similarity, and what it measured, is in :mod:`processor.stages.person_tracks`' docstring.
"""

from __future__ import annotations

import cv2
import numpy as np
from trackers import BoTSORTTracker, ByteTrackTracker, OCSORTTracker
from trackers.utils.iou import BaseIoU, IoU

from processor.stages.person_track_parts import covered_share, spans_others

ASSOCIATIONS = ("bytetrack", "botsort", "ocsort")


class ReachSimilarity(BaseIoU):
    """Association similarity for tracks seen a second apart: IoU where boxes overlap, else how near the
    feet are, as a Gaussian of their distance in box heights whose width grows with the time since the
    last analysed frame (``elapsed_s``, set before each update) at ``walk_heights_per_s``. Boxes of clearly
    different heights (beyond a factor 1.4: someone nearer or farther) are not similar. Where both the
    track and the detection have a torso signature (``looks``: a callable giving the look of a track's
    predicted box and of a detection's box, or None), a different look lowers the similarity: of two
    people equally near, the one who looks like the track continues it.

    A track the detector missed in the last frame or two (``observed``: a callable giving, per predicted
    box, the box last seen and the seconds since, or None) is also near where it was *seen*, with a reach
    grown over the whole time unseen, but only for a detection whose torso looks like it (Bhattacharyya
    distance up to ``observed_look_distance``). The library predicts an unseen track on at its last
    velocity: someone who turned into a row while a seated student hid them is found where the prediction
    did not go, and at two frames a second the reach of one frame gap fell short, so they came back as a
    new track counted as an arrival. Without the look, the grown reach took newcomers at the door for
    people hidden in the crowd there (offline, class-rush at 2 fps: an entry lost)."""

    def __init__(self, walk_heights_per_s: float = 0.5, still_heights: float = 0.1, look_weight: float = 1.0,
                 look_floor: float = 0.3, observed_look_distance: float = 0.45, demoted_floor: float = 0.3):
        self.walk_heights_per_s = float(walk_heights_per_s)
        self.still_heights = float(still_heights)
        self.look_weight = float(look_weight)
        self.look_floor = float(look_floor)
        self.elapsed_s = 0.25
        self.looks = None
        self.mobility = None  # callable: per track box, the share of a walk's reach it gets (1: walking)
        self.observed = None  # callable: per track box, (box last seen, seconds unseen) or None (see above)
        # callable: per detection box, whether demote_covered put it below the high round. Such a box only
        # continues a track it is this similar to: with the floor of the others (0.1), a box over a walker
        # and a seated student went to a still track the detector had missed that frame (a duplicate box of
        # a student's upper body, half its height, IoU 0.14), which then took the walker's next box and
        # his identity with it (class-rush at 2 fps, traced in the test suite).
        self.demoted = None
        self.demoted_floor = float(demoted_floor)
        # different people's torso looks are 0.45-0.65 apart at their 5th percentile (the renderer's people)
        self.observed_look_distance = float(observed_look_distance)
        # over a longer gap a seated person may have stood up, and the library's prediction drifts: full reach
        self.still_gap_s = 0.75
        self._iou = IoU()

    def _compute(self, boxes_1: np.ndarray, boxes_2: np.ndarray) -> np.ndarray:
        iou = self._iou.compute(boxes_1, boxes_2)
        h1, h2 = boxes_1[:, 3] - boxes_1[:, 1], boxes_2[:, 3] - boxes_2[:, 1]
        dx = (boxes_1[:, None, 0] + boxes_1[:, None, 2] - boxes_2[None, :, 0] - boxes_2[None, :, 2]) / 2.0
        dy = boxes_1[:, None, 3] - boxes_2[None, :, 3]
        height = np.maximum((h1[:, None] + h2[None, :]) / 2.0, 1.0)
        walk = self.walk_heights_per_s * max(0.0, self.elapsed_s)
        mobility = np.ones(len(boxes_1))
        if self.mobility is not None and self.elapsed_s <= self.still_gap_s:
            mobility = np.asarray(self.mobility(boxes_1), float)
        sigma = self.still_heights + walk * mobility[:, None]
        near = _near(dx, dy, height, sigma, h1[:, None], h2[None, :])
        # the looks' distances once a call: both the seen-place reach and the look factor use them
        wanted = self.looks is not None and (self.look_weight > 0 or self.observed is not None)
        distances = _look_distances(*self.looks(boxes_1, boxes_2)) if wanted else None
        if self.observed is not None and distances is not None and len(boxes_2):
            near = np.maximum(near, self._near_where_seen(boxes_1, boxes_2, mobility, distances))
        similarity = np.maximum(iou, near)
        if distances is not None and self.look_weight > 0:
            similarity *= self._look_factor(distances)
        if self.demoted is not None and len(boxes_2):
            weak = np.asarray(self.demoted(boxes_2), bool)
            similarity[:, weak] = np.where(similarity[:, weak] >= self.demoted_floor, similarity[:, weak], 0.0)
        return similarity

    def _near_where_seen(self, boxes_1: np.ndarray, boxes_2: np.ndarray, mobility: np.ndarray,
                         distances: np.ndarray) -> np.ndarray:
        """Nearness of each detection to where each missed track was last seen, over the time it has been
        unseen; 0 where the looks are not both there and alike (``distances``: NaN where one is missing;
        see the class docstring)."""
        near = np.zeros((len(boxes_1), len(boxes_2)))
        h2 = boxes_2[:, 3] - boxes_2[:, 1]
        for r, seen in enumerate(self.observed(boxes_1)):
            alike = distances[r] <= self.observed_look_distance  # NaN compares False
            if seen is None or not alike.any():
                continue
            (x1, y1, x2, y2), unseen_s = seen
            h1 = max(1.0, y2 - y1)
            dx = (x1 + x2 - boxes_2[:, 0] - boxes_2[:, 2]) / 2.0
            dy = y2 - boxes_2[:, 3]
            height = np.maximum((h1 + h2) / 2.0, 1.0)
            sigma = self.still_heights + self.walk_heights_per_s * max(0.0, unseen_s) * mobility[r]
            near[r] = np.where(alike, _near(dx, dy, height, sigma, h1, h2), 0.0)
        return near

    def _look_factor(self, distances: np.ndarray) -> np.ndarray:
        """1 for alike looks (Bhattacharyya distance up to 0.3) or nothing to compare (NaN), down to
        ``look_floor``."""
        factor = np.clip(1.0 - self.look_weight * (distances - 0.3), self.look_floor, 1.0)
        return np.where(np.isnan(distances), 1.0, factor)


def _look_distances(track_looks, det_looks) -> np.ndarray:
    """Bhattacharyya distance between each track's and each detection's torso look; NaN where either has none."""
    distances = np.full((len(track_looks), len(det_looks)), np.nan)
    for r, a in enumerate(track_looks):
        if a is None:
            continue
        for c, b in enumerate(det_looks):
            if b is not None:
                distances[r, c] = cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA)
    return distances


def _near(dx, dy, height, sigma, h1, h2) -> np.ndarray:
    """A Gaussian of the feet's distance in box heights; 0 between boxes of clearly different heights
    (beyond a factor 1.4: someone nearer or farther)."""
    near = np.exp(-0.5 * (np.hypot(dx, dy) / height / sigma) ** 2)
    ratio = np.minimum(h1, h2) / np.maximum(np.maximum(h1, h2), 1.0)
    return np.where(ratio < 1 / 1.4, 0.0, near)


def demote_covered(boxes: np.ndarray, scores: np.ndarray, high_conf: float, share: float) \
        -> tuple[np.ndarray, np.ndarray]:
    """The scores the library associates by, and which boxes were put below ``high_conf``.

    A box that the boxes scored above it cover for at least ``share`` of its area is put just below
    ``high_conf``, so ByteTrack (and BoT-SORT) offer it only to the tracks no better box took, and never
    start a track from it (``share`` 0: off). The int8 detector gives such boxes where a walker passes close
    to a seated person: one box over both, scored like a real one. In the high round it overlapped the
    walker's lagging prediction more than the walker's own box did, took the walker's track, and the
    walker went on as a new track without identity (class-rush live at 2 fps, every run). Offline, a
    share of 0.7 lost 3 door entries of 156 at 1 fps, and 0.9 missed the case. A person half hidden in a
    crowd still continues their own track in the second round.

    So is a box over two people whose own boxes cover it together, neither alone (``spans_others``),
    whatever its score: scored between their two boxes, it was left over in the high round, started a
    tentative track and took the seated person's place the next frame as a new arrival (class-rush, 4 fps,
    one core busy; traced in the test suite). Left out altogether instead, seated students' own boxes went
    too (a seated person's box between two others spans them as well)."""
    scores = np.asarray(scores, np.float32)
    candidates = scores >= high_conf  # only a box in the high round can be put below it
    if not share or len(scores) < 2 or not candidates.any():
        return scores, np.zeros(len(scores), bool)
    boxes = np.asarray(boxes, np.float64)
    demote = (covered_share(boxes, scores, among=candidates) >= share) | spans_others(boxes, candidates, share)
    return np.where(demote, np.float32(high_conf - 0.01), scores).astype(np.float32), demote


def library_tracker(association: str, buffer: int, fps: float, similarity: ReachSimilarity, *,
                    track_activation_threshold: float, high_conf_det_threshold: float, minimum_similarity: float):
    """The ``trackers`` library's tracker for ``association``, matching boxes by ``similarity``."""
    if association == "ocsort":
        return OCSORTTracker(lost_track_buffer=buffer, frame_rate=fps, minimum_consecutive_frames=2,
                             minimum_iou_threshold=minimum_similarity,
                             high_conf_det_threshold=track_activation_threshold, iou=similarity)
    if association == "botsort":
        return BoTSORTTracker(lost_track_buffer=buffer, frame_rate=fps, enable_cmc=False,
                              track_activation_threshold=track_activation_threshold,
                              minimum_iou_threshold_first_assoc=minimum_similarity,
                              minimum_iou_threshold_second_assoc=minimum_similarity,
                              minimum_iou_threshold_unconfirmed_assoc=minimum_similarity,
                              high_conf_det_threshold=high_conf_det_threshold, iou=similarity,
                              instant_first_frame_activation=False)
    return ByteTrackTracker(lost_track_buffer=buffer, frame_rate=fps,
                            track_activation_threshold=track_activation_threshold,
                            minimum_consecutive_frames=2, minimum_iou_threshold=minimum_similarity,
                            high_conf_det_threshold=high_conf_det_threshold, iou=similarity)
