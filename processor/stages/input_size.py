"""The person detector's input size per room camera, from the people it sees there.

The detector's cost grows with the square of its input side. A camera whose people all stand near it
gives boxes hundreds of pixels high; a smaller letterbox still shows them to the model well above the
height it finds people at. :class:`InputSizeChooser` keeps the smallest box height the camera's detections
had over the last ``window_s`` of stream time and, once the side has held for ``settle_s``, moves it down to
the lowest side (on the grid of ``step`` pixels from the full side, never below ``floor``) at which that
smallest person would still be at least ``min_person_px`` high in the model's input. (It used to step down
64 px at a time: from a return to the full side, the default 640 took 15 s of stream time to reach 448,
and in a room where people come and go it spent most runs at 576 and 640.) It goes straight back to the
full side
when a person box is smaller than that at the current side (somebody far away), when a run at a reduced
side finds fewer people than the run before (someone the smaller input may have missed), or while it has
seen nobody in its window (an empty room: the next person's size is unknown).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


def possible_sides(full: int, floor: int, step: int = 64) -> list[int]:
    """Every side an :class:`InputSizeChooser` from ``full`` down to ``floor`` by ``step`` may pick (what the
    int8 person detector's variants are built ahead for)."""
    floor = min(int(floor), int(full))
    sides = list(range(int(full), floor, -int(step)))
    return sides + [floor]


class InputSizeChooser:
    """One room camera's person-detector input side (long side, a multiple of 32)."""

    def __init__(self, full: int, floor: int, *, frame_side: int | None = None, min_person_px: float = 64.0,
                 window_s: float = 60.0, settle_s: float = 5.0, step: int = 64):
        if full % 32 or floor % 32 or step % 32:
            raise ValueError("input sides and steps must be multiples of 32")
        self.full, self.floor = int(full), min(int(floor), int(full))
        self.min_person_px = float(min_person_px)
        self.window_s, self.settle_s, self.step = float(window_s), float(settle_s), int(step)
        self.frame_side = frame_side  # the frame's long side, learnt from the first frame when None
        self.side = self.full
        self._grid = sorted(possible_sides(self.full, self.floor, self.step))  # smallest first
        self._heights: deque[tuple[float, float]] = deque()  # (pts, smallest box height of that run)
        self._changed_pts: float | None = None
        self._last_count: int | None = None

    def observe(self, pts_s: float, frame_side: int, heights: Sequence[float]) -> int:
        """One detector run at ``self.side`` on a frame of long side ``frame_side`` that found boxes of these
        heights (frame pixels); returns the side for the camera's next run."""
        pts_s = float(pts_s)
        self.frame_side = int(frame_side)
        if self._heights and pts_s < self._heights[-1][0]:
            self._heights.clear()  # the stream restarted
        while self._heights and pts_s - self._heights[0][0] > self.window_s:
            self._heights.popleft()
        if heights:
            self._heights.append((pts_s, float(min(heights))))
        dropped = self._last_count is not None and len(heights) < self._last_count and self.side < self.full
        self._last_count = len(heights)
        if self._changed_pts is None:
            self._changed_pts = pts_s
        smallest = min((h for _, h in self._heights), default=None)
        if dropped or smallest is None or not self._fits(smallest, self.side):
            self._set(self.full, pts_s)
        elif pts_s - self._changed_pts >= self.settle_s:
            lower = next((side for side in self._grid if self._fits(smallest, side)), self.side)
            if lower < self.side:
                self._set(lower, pts_s)
        return self.side

    def _fits(self, height: float, side: int) -> bool:
        """Whether a box ``height`` frame pixels high is at least ``min_person_px`` high in an input of ``side``."""
        return height * side / max(1, self.frame_side) >= self.min_person_px

    def _set(self, side: int, pts_s: float) -> None:
        if side != self.side:
            self.side, self._changed_pts = side, pts_s
