"""Motion gating of a room camera: run the person detector only when something moved.

A seated class is still: most room frames would give the detector's previous answer again. One
:class:`MotionGate` per room camera keeps a small grey copy (``width`` pixels wide, blurred) of the frame
the detector last ran on, its *reference*, and for each new frame counts the pixels that changed by more
than ``pixel_threshold`` grey levels against it. The frame goes to the detector when

* the changed pixels outside every track's box, or inside a door's entry zone (even within a box: somebody
  entering behind a seated person), reach ``free_px`` (about a tenth of a far walker's area at 160 px): a
  person where no track is, or somebody walking in. A track's box here is swept along its heading (its
  smoothed velocity, since the reference): a known person walking across the room changes the pixels
  ahead of their box, and that is their own motion (the ``track`` test below), not somebody new;
* the changed share of some track's box reaches ``track_share``: that person stood up or walked off
  (a seated person's hands and head change far less of the box);
* the frame before went to the detector for motion: whoever moved may still be moving by less than the
  thresholds against that frame (someone stepping into the doorway), and a new track needs a second
  sighting to be confirmed (``follow`` after motion where no track is, ``follow_track`` after a track's);
* ``max_skip_s`` of stream time passed since the detector last ran (whatever the pixels say), or, while the
  camera is *behind* (its next frames already wait for the stage), ``max_skip_busy_s``: the periodic run
  of a still room is the detector's least useful work (the pixels said nothing changed; somebody new,
  someone standing up or leaving is motion and is detected at once), and on a saturated machine it took a
  sixth of the room detector's runs from frames that showed something (`rollcall bench persons --streams
  12`: 215 of 1 351 runs). A periodic run so put off is coasted as ``deferred``;
* the gate is held open (:meth:`hold`: an entry's handoff still collecting looks, a new track: ``held``;
  a track the detector missed: ``missed``), the previous detection count differed from the one before
  (people still settling), or the stream restarted (stream time went back).

Otherwise the frame is *coasted*: the tracker is told nothing changed (tracks keep their boxes and are
not aged; see ``PersonTracker.coast``). The reference only moves on when the detector runs, so slow
drift adds up against it until it triggers. Everything here is per camera: batching frames of several
cameras into one detector call changes nothing in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class MotionSettings:
    width: int = 160  # the grey copy's width in pixels
    pixel_threshold: int = 25  # grey levels a pixel must change by to count
    free_px: int = 12  # changed pixels outside the tracks' boxes (or in an entry zone) that trigger
    track_share: float = 0.2  # share of a track's box that must change to trigger
    max_skip_s: float = 2.0  # the detector runs at least this often (stream time)
    max_skip_busy_s: float = 6.0  # ... and at least this often while the camera is behind (see above)


@dataclass(frozen=True)
class Decision:
    detect: bool
    # "first" | "restart" | "held" | "missed" | "settling" | "follow" | "follow_track" | "max_skip" | "free" |
    # "track" | "still" | "deferred" (a periodic run put off while the camera is behind)
    reason: str


class MotionGate:
    """One room camera's motion gate (see the module docstring)."""

    def __init__(self, settings: MotionSettings = MotionSettings(),
                 entry_zones: Mapping[str, Sequence[tuple[float, float]]] | None = None):
        self.settings = settings
        self.entry_zones = [np.asarray(poly, np.float64) for poly in (entry_zones or {}).values()]
        self._reference: np.ndarray | None = None
        self._scale = 1.0  # small pixels per frame pixel
        self._zone_mask: np.ndarray | None = None
        self._detected_pts: float | None = None
        self._last_pts: float | None = None
        self._held_until = float("-inf")  # an arrival: a new track, an entry collecting looks
        self._watch_until = float("-inf")  # a track the detector missed: until it is seen again or lost
        self._counts: list[int] = []  # detection counts of the last two detector runs
        self._moved: str | None = None  # "free" or "track": the last frame was detected because something moved
        self.boxes: tuple[Box, ...] = ()  # the camera's active track boxes (set by the room stage)
        self.headings: tuple[tuple[float, float], ...] = ()  # their velocities, pixels a second (or none)
        self.detected = 0
        self.coasted = 0
        self.reasons: Counter[str] = Counter()  # decisions by reason

    def hold(self, until_pts: float, *, arrival: bool = True) -> None:
        """Run the detector on every frame up to stream time ``until_pts``: for an arrival (somebody new,
        reason ``held``) or, ``arrival=False``, for a track the detector missed (reason ``missed``)."""
        if arrival:
            self._held_until = max(self._held_until, float(until_pts))
        else:
            self._watch_until = max(self._watch_until, float(until_pts))

    def decide(self, image: np.ndarray, pts_s: float, *, behind: bool = False) -> Decision:
        """Whether the detector must run on this BGR frame; when it does, the frame becomes the reference.
        ``behind``: the camera's next frames already wait (the periodic run may wait ``max_skip_busy_s``)."""
        h, w = image.shape[:2]
        grey = cv2.cvtColor(cv2.resize(image, self.small_size(w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        return self.decide_grey(grey, w, pts_s, behind=behind)

    def small_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the grey copy of a frame this size."""
        small_width = min(self.settings.width, width)
        return small_width, max(1, round(height * small_width / width))

    def decide_grey(self, grey: np.ndarray, frame_width: int, pts_s: float, *, behind: bool = False) -> Decision:
        """:meth:`decide` on the frame's grey copy at :meth:`small_size` (area-averaged, e.g. scaled from the
        decoded picture: a coasted frame is then never converted to BGR)."""
        self._scale = grey.shape[1] / frame_width
        small = cv2.GaussianBlur(grey, (3, 3), 0)  # compression noise is pixel-sized
        decision = self._decide(small, float(pts_s), behind)
        self._last_pts = float(pts_s)
        self._moved = decision.reason if decision.reason in ("free", "track") else None
        self.reasons[decision.reason] += 1
        if decision.detect:
            self._reference, self._detected_pts = small, float(pts_s)
            self.detected += 1
        else:
            self.coasted += 1
        return decision

    def ran(self, detections: int) -> None:
        """The detector's count on the frame last decided for it: a change means people are settling."""
        self._counts = (self._counts + [int(detections)])[-2:]

    def _decide(self, small: np.ndarray, pts_s: float, behind: bool) -> Decision:
        """The first reason that applies. The decisions of a settled room (``missed``, ``follow_track``,
        ``max_skip``, ``track``: the person stage may run them at a reduced input side) come after the
        check for motion where no track is, so a frame that may show somebody new is always ``free``."""
        if self._reference is None or self._reference.shape != small.shape:
            return Decision(True, "first")
        if self._last_pts is not None and pts_s < self._last_pts:
            return Decision(True, "restart")
        if pts_s <= self._held_until:
            return Decision(True, "held")
        if len(self._counts) == 2 and self._counts[0] != self._counts[1]:
            return Decision(True, "settling")
        if self._moved == "free":
            return Decision(True, "follow")
        changed = changed_mask(self._reference, small, self.settings.pixel_threshold)
        boxes = [self._to_small(box, small.shape) for box in self.boxes]
        swept = [self._to_small(box, small.shape) for box in self._swept(pts_s - self._detected_pts)]
        if self._free_change(changed, swept) >= self.settings.free_px:
            return Decision(True, "free")
        if pts_s <= self._watch_until:
            return Decision(True, "missed")
        if self._moved == "track":
            return Decision(True, "follow_track")
        since = pts_s - self._detected_pts
        if since >= (max(self.settings.max_skip_s, self.settings.max_skip_busy_s) if behind
                     else self.settings.max_skip_s):
            return Decision(True, "max_skip")
        for x1, y1, x2, y2 in boxes:
            area = max(1, (x2 - x1) * (y2 - y1))
            if np.count_nonzero(changed[y1:y2, x1:x2]) / area >= self.settings.track_share:
                return Decision(True, "track")
        return Decision(False, "deferred" if since >= self.settings.max_skip_s else "still")

    def _swept(self, dt: float) -> list[Box]:
        """Each track's box and where its heading takes it in ``dt`` seconds (at most ``max_skip_s``), as
        one box: the pixels a known person walking may have changed since the reference."""
        dt = min(max(0.0, dt), self.settings.max_skip_s)
        if len(self.headings) != len(self.boxes):  # boxes given without headings: nothing is swept
            return list(self.boxes)
        swept = []
        for box, (vx, vy) in zip(self.boxes, self.headings):
            dx, dy = vx * dt, vy * dt
            x1, y1, x2, y2 = box
            swept.append((min(x1, x1 + dx), min(y1, y1 + dy), max(x2, x2 + dx), max(y2, y2 + dy)))
        return swept

    def _free_change(self, changed: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> int:
        """Changed pixels outside every track's box, plus those in an entry zone."""
        free = changed.copy()
        for x1, y1, x2, y2 in boxes:
            free[y1:y2, x1:x2] = False
        zones = self._zones(changed.shape)
        if zones is not None:
            free |= changed & zones
        return int(np.count_nonzero(free))

    def _to_small(self, box: Box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = shape
        x1, y1, x2, y2 = (float(v) * self._scale for v in box)
        return (int(np.clip(np.floor(x1), 0, w)), int(np.clip(np.floor(y1), 0, h)),
                int(np.clip(np.ceil(x2), 0, w)), int(np.clip(np.ceil(y2), 0, h)))

    def _zones(self, shape: tuple[int, int]) -> np.ndarray | None:
        if not self.entry_zones:
            return None
        if self._zone_mask is None or self._zone_mask.shape != shape:
            mask = np.zeros(shape, np.uint8)
            for poly in self.entry_zones:
                cv2.fillPoly(mask, [np.round(poly * self._scale).astype(np.int32)], 1)
            self._zone_mask = mask.astype(bool)
        return self._zone_mask


def changed_mask(reference: np.ndarray, small: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels of ``small`` that differ from ``reference`` by more than ``threshold`` grey levels."""
    return cv2.absdiff(reference, small) > threshold
