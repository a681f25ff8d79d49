"""Whether a room camera's frame can show a face big enough to use, from the people in it.

A room camera looks for faces only to confirm or correct identities (``[tracking] room_faces``), and a face
is used only when it passes the quality gate, whose first check is its size (``[thresholds] min_face_px``,
the smaller side of the face box). In a lecture room seen from the front wall most faces are far smaller
than that: the rendered scenarios' room cameras found 558, 321 and 1 324 faces inside person boxes
(`default`, `hard-cases`, `class-rush`, every 3rd frame) and none of them usable, while the face model
cost 7-11 ms a frame beside the person detector's 21-41 ms. How big a face can be in a person box of a
given height depends on the camera (its angle, how much of each person desks and rows hide): on those
room cameras the face's side was at most 0.10, 0.14 and 0.18 of the person box's height, on the real
photos of the model pack (portraits cut at the chest) up to 0.39.

So each camera learns its own bound, :class:`FaceSizeBound`: the largest ratio of a face's size to the
height of the person box it sits in, over its last ``window`` faces, times ``margin``. Once it has seen
``min_samples`` faces, a frame whose tallest person times that bound is below ``min_face_px`` cannot show a
usable face and is not searched; every ``recheck_s`` of stream time a frame is searched anyway, so the
bound keeps learning (a camera moved or zoomed, people standing close). Until then every frame is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

Box = tuple[float, float, float, float]


class FaceSizeBound:
    """One room camera's bound on face size against person height (see the module docstring)."""

    def __init__(self, min_face_px: float, *, quantile: float = 0.99, margin: float = 1.5, min_samples: int = 30,
                 window: int = 500, recheck_s: float = 10.0):
        self.min_face_px = float(min_face_px)
        self.quantile, self.margin = float(quantile), float(margin)
        self.min_samples, self.recheck_s = int(min_samples), float(recheck_s)
        self._ratios: deque[float] = deque(maxlen=int(window))
        self._bound: float | None = None  # the bound of the ratios as they are (None: not learnt, or to sort again)
        self._searched_pts: float | None = None
        self.skipped = 0  # frames not searched: nobody tall enough for a usable face

    @property
    def bound(self) -> float | None:
        """The largest face size a person box of height 1 may hold here (None: not learnt yet)."""
        if self._bound is None and len(self._ratios) >= self.min_samples:  # sorted once per search, not per frame
            ratios = sorted(self._ratios)
            self._bound = ratios[min(len(ratios) - 1, int(self.quantile * len(ratios)))] * self.margin
        return self._bound

    def worth_searching(self, pts_s: float, person_boxes: Sequence[Box]) -> bool:
        """Whether a frame with these person boxes may show a usable face (or is due for a look anyway)."""
        bound = self.bound
        due = (self._searched_pts is None or pts_s < self._searched_pts
               or pts_s - self._searched_pts >= self.recheck_s)
        if bound is None or due:
            return True
        tallest = max((box[3] - box[1] for box in person_boxes), default=0.0)
        if tallest * bound >= self.min_face_px:
            return True
        self.skipped += 1
        return False

    def searched(self, pts_s: float, person_boxes: Sequence[Box], face_boxes: Sequence[Box]) -> None:
        """A frame was searched: learn from each face that sits in a person box (the smallest one holding
        its centre: a face in front of a taller person's box belongs to the nearer, smaller one)."""
        self._searched_pts = float(pts_s)
        for x1, y1, x2, y2 in face_boxes:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            heights = [b[3] - b[1] for b in person_boxes if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
            if heights and min(heights) > 0:
                self._ratios.append(min(x2 - x1, y2 - y1) / min(heights))
                self._bound = None
