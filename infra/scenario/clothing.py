"""What each person wears: one top and one bottom colour, the same at the door camera and in the room.

The room's figures are real pedestrians cut from vtest.avi, so many people would share a figure (there
are about a dozen) and most of them wear dark clothes. Each arrival gets its own (top, bottom) colour
pair, chosen deterministically from the scenario seed: the figure's torso and legs are recoloured to it
(the original pixels' brightness pattern is kept, so folds, arms and shading and so the person detector's
cues stay), and the door camera draws the same colours under the face. Clothing is then a real cue for
matching a door passage to a room track, as it is on a campus.

Figure rows (fractions of the figure's height from the top of its silhouette): head above
``HEAD_END``, top (torso and arms) to ``TOP_END``, bottom (legs) below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.scenario.figures import Figure

HEAD_END = 0.15
TOP_END = 0.52
KEEP_ORIGINAL = 0.15  # share of the original colour kept in recoloured pixels (texture)

# BGR; tops are far apart in hue or brightness, bottoms are what people wear on their legs
TOPS = ((40, 40, 200), (190, 95, 30), (60, 150, 50), (40, 200, 225), (30, 120, 235), (140, 50, 120),
        (170, 160, 40), (175, 125, 240), (228, 228, 228), (45, 45, 45), (135, 135, 135), (40, 75, 125),
        (105, 45, 20), (40, 125, 125), (45, 25, 125), (70, 220, 150))
BOTTOMS = ((110, 70, 40), (35, 35, 35), (120, 170, 190), (110, 110, 110), (45, 65, 95))


@dataclass(frozen=True)
class Clothing:
    top: tuple[int, int, int]  # BGR
    bottom: tuple[int, int, int]


def assign(ids: list[str], seed: int) -> dict[str, Clothing]:
    """One outfit per id (in the given order): no two people share a top until there are more than 16."""
    rng = np.random.default_rng([seed, 5])
    tops = rng.permutation(len(TOPS))
    bottoms = rng.permutation(len(BOTTOMS))
    return {pid: Clothing(TOPS[int(tops[n % len(TOPS)])], BOTTOMS[int(bottoms[(n + n // len(TOPS)) % len(BOTTOMS)])])
            for n, pid in enumerate(ids)}


def dress(figure: Figure, clothing: Clothing) -> Figure:
    """The figure with its torso and legs recoloured to ``clothing`` (head and hands' skin left as is above
    HEAD_END)."""
    frames = []
    for img, alpha in zip(figure.frames, figure.alphas):
        ys = np.nonzero((alpha > 0.5).any(axis=1))[0]
        top, height = (int(ys[0]), int(ys[-1]) + 1 - int(ys[0])) if len(ys) else (0, img.shape[0])
        out = img.astype(np.float32)
        lum = out.mean(axis=2)
        rows = (np.arange(img.shape[0]) - top) / max(1, height)
        for lo, hi, colour in ((HEAD_END, TOP_END, clothing.top), (TOP_END, 2.0, clothing.bottom)):
            band = (rows >= lo) & (rows < hi)
            region = band[:, None] & (alpha > 0.3)
            if not region.any():
                continue
            ref = float(np.median(lum[region]))
            shade = np.clip(lum / max(ref, 8.0), 0.45, 1.3)[..., None]
            new = np.array(colour, np.float32) * shade
            # the soft edge keeps the original colour (recoloured background there would glow)
            weight = (np.clip((alpha - 0.35) / 0.4, 0, 1) * (1 - KEEP_ORIGINAL))[..., None]
            mix = np.clip(new * weight + out * (1 - weight), 0, 255)
            out[band] = mix[band]
        frames.append(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    return Figure(figure.index, tuple(frames), figure.alphas, figure.faces_right, figure.source_frames)
