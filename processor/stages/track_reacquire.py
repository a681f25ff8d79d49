"""Which lost (or unseen) person track a new library id continues on a room camera: the ``reacquired``
rules of :mod:`processor.stages.person_tracks` (near where the track was or was heading, of similar
height, not clearly different-looking; beyond that reach, ``walked_on`` on the look alone)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from processor.stages.person_track_parts import Box, PersonTrack, foot, look_distance


@dataclass(frozen=True)
class ReacquireRules:
    reacquire_s: float = 5.0  # a track unseen longer is not continued
    reacquire_heights: float = 0.6  # reach of the prediction, in box heights
    max_look_distance: float = 0.65  # a clearly different look vetoes, except where the track stood
    still_nearness: float = 0.25  # "where it stood": this share of the reach
    walk_heights_per_s: float = 1.0  # a brisk walk, for walked_on
    walk_on_look_distance: float = 0.3
    walk_on_margin: float = 0.15
    height_factor: float = 1.6

    def candidate(self, tracks: Iterable[PersonTrack], box: Box, pts_s: float, seen: set[str],
                  look: np.ndarray | None = None) -> tuple[PersonTrack | None, bool]:
        """The track a new box continues, and whether it was found on its look alone (walked on)."""
        tracks = list(tracks)
        fx, fy = foot(box)
        best, best_d = None, float("inf")
        for track, track_height in self._unseen_alike(tracks, box, pts_s, seen):
            # Nearest to where the feet were or to where they were heading (someone who walked behind
            # another person comes out further along their way); the prediction is capped at 1.5 s.
            tx, ty = track.foot
            ahead = min(pts_s - track.last_pts_s, 1.5)
            px, py = tx + track.velocity[0] * ahead, ty + track.velocity[1] * ahead
            d = min(float(np.hypot(fx - tx, fy - ty)), float(np.hypot(fx - px, fy - py)))
            # the farther the prediction reaches, the less sure it is: widen the reach with it
            reach = self.reacquire_heights * track_height + 0.3 * float(np.hypot(*track.velocity)) * ahead
            # a different look vetoes, except right where the track was (a torso crop changes with the
            # pose more than a standing person moves)
            looks_alike = d / reach <= self.still_nearness or self._look_distance(track, look) <= self.max_look_distance
            if d <= reach and d / reach < best_d and looks_alike:
                best, best_d = track, d / reach
        if best is not None:
            return best, False
        walked = self._walked_on(tracks, box, pts_s, seen, look)
        return walked, walked is not None

    @staticmethod
    def _look_distance(track: PersonTrack, look: np.ndarray | None) -> float:
        if look is None or track.look is None:
            return 0.0  # nothing to compare: position decides
        return look_distance(track.look, look)

    def _unseen_alike(self, tracks: list[PersonTrack], box: Box, pts_s: float,
                      seen: set[str]) -> Iterator[tuple[PersonTrack, float]]:
        """(track, its box height) of the tracks a new box may continue: not seen in this frame, unseen for
        less than ``reacquire_s``, of a similar height (within ``height_factor``, 1.6: someone much nearer
        or farther is not the same person, but one who walked to a seat and sat down is a third shorter;
        with 1.4 a student hidden a moment on her way in came out seated as somebody new)."""
        height = box[3] - box[1]
        for track in tracks:
            if track.track_id in seen or pts_s <= track.last_pts_s or track.unseen_s(pts_s) > self.reacquire_s:
                continue
            track_height = max(1.0, track.box[3] - track.box[1])
            if 1 / self.height_factor <= height / track_height <= self.height_factor:
                yield track, track_height

    def _walked_on(self, tracks: list[PersonTrack], box: Box, pts_s: float, seen: set[str],
                   look: np.ndarray | None) -> PersonTrack | None:
        """A lost track this new one continues beyond the reach of a prediction: someone hidden in a crowd
        for seconds who walked on to their seat. Only on the look (same camera, same light): clearly alike
        (within ``walk_on_look_distance``), clearly more alike than any other lost track that could have
        walked there, of similar height, and within a brisk walk (``walk_heights_per_s``) of where it was."""
        if look is None:
            return None
        fx, fy = foot(box)
        candidates = []
        for track, track_height in self._unseen_alike(tracks, box, pts_s, seen):
            unseen = pts_s - track.last_pts_s
            known = track.look if track.look is not None else track.crowd_look
            if known is None:
                continue
            walk = (self.reacquire_heights + self.walk_heights_per_s * unseen) * track_height
            if float(np.hypot(fx - track.foot[0], fy - track.foot[1])) <= walk:
                candidates.append((look_distance(known, look), track))
        if not candidates:
            return None
        candidates.sort(key=lambda c: c[0])
        best_distance, best = candidates[0]
        runner_up = candidates[1][0] if len(candidates) > 1 else float("inf")
        if best_distance <= self.walk_on_look_distance and runner_up - best_distance >= self.walk_on_margin:
            return best
        return None
