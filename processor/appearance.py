"""A compact appearance descriptor of a person's clothing, comparable between two cameras.

Pure numpy/cv2. Used by the door-to-room handoff: the door camera describes the torso of each face
track's best frame, the room camera the body of each entering track, and :mod:`processor.handoff`
compares the two beside transit time, order and side of the doorway.

THE DESCRIPTOR (``kind = "hs-hist-v1"``), per body part (``upper``: the upper torso, ``lower``: hips
to knees), one histogram of :data:`PART_BINS` = 19 bins, L1-normalised:

- 16 chromatic bins, 8 hues x 2 saturations, for pixels with enough colour (S >= 48 and V >= 40 on
  OpenCV's 0-255 scale): hue is soft-binned (each pixel shares its weight between the two nearest hue
  bins, around the circle), so a hue on a bin edge does not flip between cameras;
- 3 achromatic bins (dark, mid, light by V, soft-binned between their centres V = 30, 125, 220) for
  the rest: black, grey and white clothes have no reliable hue, and a pure hue-saturation histogram
  could not tell a black coat from a white shirt. Soft binning keeps a white shirt in a fold's shadow
  (V 150-230) partly light rather than flipping it to mid at a hard edge.

Pixels are weighted by a horizontal Gaussian centred on the body (the sides of a box are often
background). Brightness only enters through the 3 wide achromatic bins, so a camera with other
exposure or lighting moves little weight; scale does not matter (a histogram of a region, normalised).

Where the parts are:

- from a person box (room camera, or a door camera's person detection): ``upper`` is 18-48 % of the
  box height, ``lower`` 55-85 %, both over the middle half of the box width;
- from a face box (door camera): the torso below the chin in a fixed geometry: from 0.5 face heights
  below the face (past the neck) to 2.3 below it, 1.3 face widths wide, centred on the face: the chest,
  what a door camera showing head and upper body sees (cut off by the frame's bottom edge when the
  person is close). No ``lower`` part (legs are mostly out of view).

:func:`distance` is the Bhattacharyya distance (0 same, 1 disjoint) averaged over the parts both
descriptors have; None when they share none (the handoff then uses the other cues alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np

KIND = "hs-hist-v1"
HUE_BINS = 8
SAT_BINS = 2
GREY_BINS = 3
PART_BINS = HUE_BINS * SAT_BINS + GREY_BINS
PARTS = ("upper", "lower")
MIN_SATURATION = 48  # below this (0-255) a pixel's hue is noise
MIN_VALUE = 40  # darker than this, hue is noise too
SAT_SPLIT = 140  # the two saturation bins: 48-139, 140-255
GREY_CENTRES = (30.0, 125.0, 220.0)  # achromatic: dark, mid, light (V), soft-binned between them
MIN_PIXELS = 64  # a part smaller than this (after clipping to the frame) is not described

# Regions of a person box: (top, bottom) as fractions of its height, (left, right) of its width.
PERSON_PARTS = {"upper": ((0.18, 0.48), (0.25, 0.75)), "lower": ((0.55, 0.85), (0.25, 0.75))}
# The torso below a face box: face heights below its bottom edge, and face widths wide (centred).
FACE_TORSO_BELOW = (0.5, 2.3)
FACE_TORSO_WIDTH = 1.3

Box = tuple[float, float, float, float]


@dataclass
class Appearance:
    """One descriptor: a histogram per body part seen (L1-normalised float32 arrays of PART_BINS)."""

    parts: dict[str, np.ndarray]
    box: Box | None = None  # the region the parts were cut from (person box, or the torso box at a door)

    def to_event(self, digits: int = 3) -> dict:
        """The event's ``appearance`` object (rounded: 19 floats per part)."""
        out: dict = {"kind": KIND}
        for name in PARTS:
            if name in self.parts:
                out[name] = [round(float(v), digits) for v in self.parts[name]]
        if self.box is not None:
            out["box"] = {k: round(float(v), 1) for k, v in zip(("x1", "y1", "x2", "y2"), self.box)}
        return out

    @classmethod
    def from_event(cls, data: Mapping | None) -> "Appearance | None":
        """From an event's ``appearance`` object; None when absent or of another kind (a newer producer)."""
        if not data or data.get("kind") != KIND:
            return None
        parts = {}
        for name in PARTS:
            values = data.get(name)
            if values is not None and len(values) == PART_BINS:
                hist = np.asarray(values, np.float32)
                total = float(hist.sum())
                if total > 0:
                    parts[name] = hist / total
        box = data.get("box")
        box_t = (box["x1"], box["y1"], box["x2"], box["y2"]) if box else None
        return cls(parts, box_t) if parts else None


def part_histogram(image: np.ndarray, region: Box) -> np.ndarray | None:
    """The 19-bin histogram of one region of a BGR image; None when the region is (nearly) outside it."""
    height, width = image.shape[:2]
    x1, y1 = int(max(0, round(region[0]))), int(max(0, round(region[1])))
    x2, y2 = int(min(width, round(region[2]))), int(min(height, round(region[3])))
    if (x2 - x1) * (y2 - y1) < MIN_PIXELS or x2 - x1 < 4 or y2 - y1 < 4:
        return None
    hsv = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_BGR2HSV)
    h, s, v = (hsv[..., k].astype(np.float32) for k in range(3))
    # centre weighting across the region (as cut from the full region: clipping must not shift it)
    full_left, full_width = float(region[0]), max(1.0, float(region[2] - region[0]))
    xs = (np.arange(x1, x2, dtype=np.float32) + 0.5 - full_left) / full_width - 0.5
    weight = np.broadcast_to(np.exp(-0.5 * (xs / 0.35) ** 2)[None, :], h.shape)
    hist = np.zeros(PART_BINS, np.float64)
    chromatic = (s >= MIN_SATURATION) & (v >= MIN_VALUE)
    if chromatic.any():
        hue = h[chromatic] / 180.0 * HUE_BINS - 0.5  # bin centres at integers
        low = np.floor(hue)
        frac = hue - low
        low = low.astype(np.int64) % HUE_BINS
        sat = (s[chromatic] >= SAT_SPLIT).astype(np.int64)
        w = weight[chromatic]
        hist[:HUE_BINS * SAT_BINS] += np.bincount(sat * HUE_BINS + low, (1 - frac) * w, HUE_BINS * SAT_BINS)
        hist[:HUE_BINS * SAT_BINS] += np.bincount(sat * HUE_BINS + (low + 1) % HUE_BINS, frac * w,
                                                  HUE_BINS * SAT_BINS)
    grey = ~chromatic
    if grey.any():
        level = np.interp(v[grey], GREY_CENTRES, np.arange(GREY_BINS, dtype=np.float64))
        low = np.minimum(np.floor(level).astype(np.int64), GREY_BINS - 2)
        frac = level - low
        w = weight[grey]
        hist[HUE_BINS * SAT_BINS:] += np.bincount(low, (1 - frac) * w, GREY_BINS)
        hist[HUE_BINS * SAT_BINS:] += np.bincount(low + 1, frac * w, GREY_BINS)
    total = hist.sum()
    return (hist / total).astype(np.float32) if total > 0 else None


def person_regions(box: Box) -> dict[str, Box]:
    """The body parts' regions in a person box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return {name: (x1 + left * w, y1 + top * h, x1 + right * w, y1 + bottom * h)
            for name, ((top, bottom), (left, right)) in PERSON_PARTS.items()}


def torso_below_face(face_box: Box) -> Box:
    """The chest region below a face box (door cameras: see the module)."""
    x1, y1, x2, y2 = (float(v) for v in face_box)
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    return (cx - FACE_TORSO_WIDTH * w / 2, y2 + FACE_TORSO_BELOW[0] * h,
            cx + FACE_TORSO_WIDTH * w / 2, y2 + FACE_TORSO_BELOW[1] * h)


def describe_person(image: np.ndarray, box: Box) -> Appearance | None:
    """Descriptor of a person box (both parts where they are in the frame); None if neither is."""
    parts = {}
    for name, region in person_regions(box).items():
        hist = part_histogram(image, region)
        if hist is not None:
            parts[name] = hist
    return Appearance(parts, tuple(float(v) for v in box)) if parts else None


def describe_below_face(image: np.ndarray, face_box: Box) -> Appearance | None:
    """Descriptor of the torso below a face (the ``upper`` part only); None when it is out of the frame."""
    region = torso_below_face(face_box)
    hist = part_histogram(image, region)
    return Appearance({"upper": hist}, region) if hist is not None else None


def mean(appearances: Sequence[Appearance]) -> Appearance | None:
    """The average of several descriptors of one person (per part, over those that have it)."""
    parts = {}
    for name in PARTS:
        hists = [a.parts[name] for a in appearances if name in a.parts]
        if hists:
            avg = np.mean(hists, axis=0)
            parts[name] = (avg / max(float(avg.sum()), 1e-9)).astype(np.float32)
    if not parts:
        return None
    return Appearance(parts, appearances[-1].box)


def distance(a: Appearance | None, b: Appearance | None) -> float | None:
    """Bhattacharyya distance averaged over the parts both have (0 alike .. 1 nothing in common);
    None when either is missing or they share no part."""
    if a is None or b is None:
        return None
    common = [name for name in PARTS if name in a.parts and name in b.parts]
    if not common:
        return None
    values = []
    for name in common:
        overlap = float(np.sum(np.sqrt(a.parts[name].astype(np.float64) * b.parts[name].astype(np.float64))))
        values.append(float(np.sqrt(max(0.0, 1.0 - min(1.0, overlap)))))
    return float(np.mean(values))


__all__ = ["Appearance", "KIND", "PART_BINS", "describe_below_face", "describe_person", "distance", "mean",
           "part_histogram", "person_regions", "torso_below_face"]
