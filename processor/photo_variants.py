"""More test identities out of the few photos registry packages ship: faces cut out of group photos, and a
second photo of a one-photo identity made by mirroring and relighting the first.

Registry packages ship 19 distinct real people in all (see ``infra/scenarios/photos/CREDITS.md``), but only
Macron, Ardern and Obama have two genuinely different photos. For everyone else the "door photo" made here
is the enrolment photo mirrored, re-lit (gamma, colour cast) and slightly rotated: the door camera then tests
recognition under a pose/lighting change of the SAME picture, which is much easier than recognising a
different photo taken years apart (SFace cosine ~0.85-0.95 instead of 0.5-0.8). Scenarios that use them say
so. Group-photo crops are head-and-shoulders boxes fixed here in the source image's pixels.

The variants are written as PNG beside the extracted photos (lossless, so their bytes, and so the
renderer's input hash, are stable); nothing derived is committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infra.foundation.errors import RollcallError


@dataclass(frozen=True)
class PhotoVariant:
    name: str  # file written beside the sources (PNG)
    source: str  # an extracted photo's file name
    person: str
    box: tuple[int, int, int, int] | None = None  # x, y, w, h cut out of the source; None: whole photo
    door: bool = False  # the door-camera variant: mirrored, re-lit, turned a little
    gamma: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # B, G, R gains
    turn_deg: float = 0.0
    scale: float = 1.0  # enlarge small faces (the enrolment check wants >= 40 px faces)


def _crops(source: str, people: list[tuple[str, str, tuple[int, int, int, int] | None, float, tuple[float, float, float]]],
           scale: float = 1.0) -> list[PhotoVariant]:
    out = []
    for stem, person, box, gamma, tint in people:
        out.append(PhotoVariant(f"{stem}.png", source, person, box, scale=scale))
        out.append(PhotoVariant(f"{stem}_door.png", source, person, box, True, gamma, tint, 4.0, scale))
    return out


# Debian's opencv-doc (already needed for vtest.avi) ships one more portrait; pinned like the archives' photos
SYSTEM_SOURCES = {
    "messi5.jpg": (Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg"),
                   "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
}


_WARM, _COOL, _DIM = (0.90, 1.0, 1.12), (1.12, 1.02, 0.90), (1.0, 1.0, 1.0)

VARIANTS: tuple[PhotoVariant, ...] = (
    # insightface t1.jpg: six people in a group photo (boxes around each face, head and shoulders)
    *_crops("insightface_t1.jpg", [
        ("t1_a", "t1.jpg person A", (399, 194, 234, 362), 0.8, _WARM),
        ("t1_b", "t1.jpg person B", (840, 0, 230, 345), 1.25, _COOL),
        ("t1_c", "t1.jpg person C", (0, 204, 236, 320), 0.85, _COOL),
        ("t1_d", "t1.jpg person D", (197, 88, 243, 316), 1.2, _WARM),
        ("t1_e", "t1.jpg person E", (684, 291, 226, 306), 0.8, _DIM),
        ("t1_f", "t1.jpg person F", (1063, 210, 217, 310), 1.3, _WARM),
    ]),
    *_crops("ultralytics_bus.jpg", [
        ("bus_a", "bus.jpg person A", (85, 388, 97, 136), 0.85, _WARM),
        ("bus_b", "bus.jpg person B", (243, 397, 88, 126), 1.2, _COOL),
    ], scale=2.0),
    *_crops("messi5.jpg", [("messi", "Lionel Messi", (180, 50, 130, 170), 0.85, _COOL)], scale=2.0),
    *_crops("ultralytics_zidane.jpg", [
        ("zidane_a", "zidane.jpg person A (left)", (486, 182, 236, 400), 0.85, _COOL),
        ("zidane_b", "zidane.jpg person B (right)", (828, 11, 312, 436), 1.2, _WARM),
    ]),
    *_crops("astronaut.png", [("collins", "Eileen Collins", (120, 0, 220, 330), 0.8, _WARM)]),
    *_crops("tom_hanks.png", [("hanks", "Tom Hanks", None, 1.25, _COOL)]),
    *_crops("grace_hopper.jpg", [("hopper", "Grace Hopper", None, 0.85, _WARM)]),
    PhotoVariant("sunak_door.png", "sunak.jpg", "Rishi Sunak", None, True, 0.85, _WARM, 4.0),
    PhotoVariant("biden_door.png", "biden.jpg", "Joe Biden", None, True, 1.2, _COOL, -4.0),
)


def make_variant(image: np.ndarray, v: PhotoVariant) -> np.ndarray:
    if v.box is not None:
        x, y, w, h = v.box
        image = image[y:y + h, x:x + w]
    if v.scale != 1.0:
        size = (round(image.shape[1] * v.scale), round(image.shape[0] * v.scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    if not v.door:
        return image.copy()
    out = image[:, ::-1].astype(np.float32) / 255
    out = out ** v.gamma * np.array(v.tint, np.float32)
    h, w = out.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), v.turn_deg, 1.0)
    out = cv2.warpAffine(out, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def write_variants(folder: Path, variants: tuple[PhotoVariant, ...] = VARIANTS) -> list[Path]:
    """Write every variant whose source is in ``folder``; a file already holding the same bytes is left as is."""
    written = []
    for v in variants:
        src = folder / v.source
        if v.source in SYSTEM_SOURCES:
            src, sha = SYSTEM_SOURCES[v.source]
            if not src.is_file() or hashlib.sha256(src.read_bytes()).hexdigest() != sha:
                raise RollcallError(f"{src}: missing or not the pinned file — install Debian's opencv-doc "
                                    "(apt-get install opencv-doc)")
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if image is None:
            raise RollcallError(f"{src}: missing or unreadable; run `rollcall models fetch open` again")
        ok, blob = cv2.imencode(".png", make_variant(image, v))
        if not ok:
            raise RollcallError(f"could not encode {v.name}")
        dest = folder / v.name
        if not dest.is_file() or dest.read_bytes() != blob.tobytes():
            partial = dest.with_name(dest.name + ".partial")
            partial.write_bytes(blob.tobytes())
            partial.replace(dest)
        written.append(dest)
    return written
