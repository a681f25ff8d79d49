"""Proxy-attendance attacks for the door camera: a visitor holds up a picture of an enrolled student.

A visitor with ``holds = { kind = ..., of = ... }`` walks up to the door like anyone else (their body in
their own clothing), but where their head would be the camera sees a rigid picture of the enrolled
person ``of``, cut from that person's door photo (the face a friend would have on their phone or print):

``print``
    the photo printed on paper: a lifted black level and a little less contrast (ink on paper), a warm
    paper tint and grain, a white border round the picture (``PRINT_BORDER`` of the face width) and the
    holder's fingers over its lower corners.
``phone``
    the photo on a phone screen: the screen glows (brighter, a blue cast, lifted blacks), its pixel grid
    (RGB stripes with dark gaps, ``PIXEL_PITCH`` sprite pixels per screen pixel) beats against the
    camera's pixels as moiré when the picture is scaled into the frame, a soft diagonal glare, a black
    bezel with rounded corners round the screen and the holder's fingers on its sides.

Either is returned as a :class:`~infra.scenario.faces.Sprite` whose ``face`` is where the pictured face
is, so the door scene moves it exactly as it moves a head (sway, bob, approach), as one flat rigid
piece: what the liveness check of ``processor/stages/liveness.py`` has to tell from a person.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from infra.foundation.errors import RollcallError
from infra.scenario.faces import SPRITE_FACE_W, Sprite, detect_faces

PRINT_BORDER = 0.08  # white paper margin, in face widths
BEZEL = (0.07, 0.16)  # phone bezel, sides and top/bottom, in face widths
PIXEL_PITCH = 3  # sprite pixels per screen pixel (one per R, G, B stripe)
SKIN_BGR = (120, 150, 200)


def held_picture(kind: str, photo: Path, where: str) -> Sprite:
    """The picture a visitor holds up: ``kind`` "print" or "phone" showing the face in ``photo``."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    faces = detect_faces(image) if image is not None else []
    if not faces:
        raise RollcallError(f"{where}: no face found in {photo.name} — the held picture needs a clear face")
    face = faces[0]
    s = SPRITE_FACE_W / face.w
    big = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    fw, fh = face.w * s, face.h * s
    cx, fy = float(np.mean(face.landmarks[:, 0])) * s, face.y * s
    # the picture's extent round the face: left and right of the landmarks' centre in face widths, above
    # and below the face box's top in face heights (a phone screen is taller than a print)
    left, top, bottom = (0.95, 0.5, 1.45) if kind == "print" else (0.9, 0.75, 1.9)
    content = _cut(big, cx - left * fw, fy - top * fh, cx + left * fw, fy + bottom * fh)
    if kind == "print":
        margin = round(PRINT_BORDER * fw)
        picture, margins = _as_print(content, margin), (margin, margin)
    else:
        margins = (round(BEZEL[0] * fw), round(BEZEL[1] * fw))
        picture = _as_phone(content, *margins)
    face_box = (margins[0] + face.x * s - (cx - left * fw), margins[1] + top * fh, fw, fh)
    return _with_hand(picture, face_box, kind)


def _cut(image: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The rectangle of the photo, its edges repeated where it runs off the photo."""
    x0, y0, x1, y1 = (round(v) for v in (x0, y0, x1, y1))
    pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    return padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad].copy()


def _as_print(content: np.ndarray, border: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    ink = content.astype(np.float32) * 0.82 + 28  # paper never gets as dark as a screen or a face in shadow
    ink *= np.array([0.96, 1.0, 1.03], np.float32)  # warm paper (BGR)
    ink += rng.normal(0, 3.0, ink.shape[:2])[..., None]  # paper grain
    framed = cv2.copyMakeBorder(np.clip(ink, 0, 255).astype(np.uint8), border, border, border, border,
                                cv2.BORDER_CONSTANT, value=(236, 240, 242))
    return framed


def _as_phone(content: np.ndarray, side: int, end: int) -> np.ndarray:
    h, w = content.shape[:2]
    glow = content.astype(np.float32) * 1.05 + 22
    glow *= np.array([1.10, 1.0, 0.92], np.float32)  # a screen's blue cast (BGR)
    # pixel grid: each screen pixel is PIXEL_PITCH stripes (B, G, R order in BGR), dark gaps between rows
    grid = np.full((h, w, 3), 0.35, np.float32)
    cols = np.arange(w) % PIXEL_PITCH
    for channel in range(3):
        grid[:, cols == 2 - channel, channel] = 1.6
    grid[np.arange(h) % PIXEL_PITCH == 0] *= 0.45
    glow *= grid
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    glare = np.exp(-(((xx - 0.7 * w) + 0.6 * (yy - 0.3 * h)) / (0.12 * w)) ** 2)  # a diagonal streak of light
    glow += 70 * glare[..., None]
    screen = np.clip(glow, 0, 255).astype(np.uint8)
    phone = np.full((h + 2 * end, w + 2 * side, 3), 18, np.uint8)  # the black bezel
    phone[end:end + h, side:side + w] = screen
    return phone


def _with_hand(picture: np.ndarray, face_box: tuple[float, float, float, float], kind: str) -> Sprite:
    """The picture on a transparent canvas with the holder's fingers over its edges."""
    h, w = picture.shape[:2]
    pad = round(0.08 * w)
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.uint8)
    alpha = np.zeros(canvas.shape[:2], np.float32)
    canvas[pad:pad + h, pad:pad + w] = picture
    shape = np.zeros(canvas.shape[:2], np.uint8)
    radius = round(0.08 * w) if kind == "phone" else 1  # a phone's rounded corners
    cv2.rectangle(shape, (pad + radius, pad), (pad + w - radius, pad + h), 255, -1)
    cv2.rectangle(shape, (pad, pad + radius), (pad + w, pad + h - radius), 255, -1)
    for cx, cy in ((pad + radius, pad + radius), (pad + w - radius, pad + radius),
                   (pad + radius, pad + h - radius), (pad + w - radius, pad + h - radius)):
        cv2.circle(shape, (cx, cy), radius, 255, -1, cv2.LINE_AA)
    # fingers: three round-ended strokes over each side's lower part (thumbs in front for a print)
    finger = max(3, round(0.05 * w))
    for side in (-1, 1):
        x_edge = pad if side < 0 else pad + w
        for k in range(3):
            y = pad + round((0.62 + 0.09 * k) * h)
            start, end = (x_edge - side * 2 * finger, y), (x_edge + side * round(1.3 * finger), y - finger // 2)
            cv2.line(canvas, start, end, SKIN_BGR, finger, cv2.LINE_AA)
            cv2.line(shape, start, end, 255, finger, cv2.LINE_AA)
    alpha[:] = cv2.GaussianBlur(shape.astype(np.float32) / 255, (0, 0), 0.6)
    fx, fy, fw, fh = face_box
    return Sprite(canvas, alpha, (fx + pad, fy + pad, fw, fh))
