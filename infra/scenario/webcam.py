"""A webcam clip of one person, rendered from their photo: what a laptop camera sees while someone is
enrolled on class photo day. Used to feed Chromium's fake camera (a .y4m file) and as an uploaded video.

The person's head and shoulders (:func:`infra.scenario.faces.head_and_shoulders`) sway in front of a
textured wall, lean a little (in-plane roll), come nearer and back, and the light changes; in the
middle of the clip they move fast for a moment (motion blur: the frames a frame picker must leave out).
Sensor noise on every frame, as a webcam has.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from infra.scenario.draw import SensorNoise, blend, motion_kernel, texture

SIZE = (640, 480)
FACE_WIDTH = 150  # px in the clip: a person at arm's length from a laptop


def _wall(rng: np.random.Generator) -> np.ndarray:
    w, h = SIZE
    base = np.array([150, 160, 170], np.float32)  # a pale blue-grey wall (BGR)
    return np.clip(base * texture((h, w), rng, 40, 0.05)[..., None], 0, 255).astype(np.uint8)


def _posed(sprite, scale: float, roll_deg: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The sprite scaled and turned about its face's centre, and where that centre is in the result."""
    fx, fy, fw, fh = sprite.face
    s = scale * FACE_WIDTH / fw
    centre = (fx + fw / 2, fy + fh / 2)
    m = cv2.getRotationMatrix2D(centre, roll_deg, s)
    h, w = sprite.alpha.shape
    out_w, out_h = int(w * s), int(h * s)
    shift = ((out_w - w) / 2, (out_h - h) / 2)
    m[:, 2] += shift
    image = cv2.warpAffine(sprite.image, m, (out_w, out_h), flags=cv2.INTER_AREA)
    alpha = cv2.warpAffine(sprite.alpha, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    return image, alpha, (centre[0] + shift[0], centre[1] + shift[1])


def webcam_frames(sprite, seconds: float = 4.0, fps: int = 15, seed: int = 7) -> Iterator[np.ndarray]:
    """The clip's BGR frames (SIZE), the person in ``sprite`` facing the camera."""
    rng = np.random.default_rng(seed)
    wall, noise = _wall(rng), SensorNoise(SIZE[::-1], rng, sigma=2.0)
    blur_from, blur_to = 0.45 * seconds, 0.6 * seconds  # the fast move
    previous_x = None
    for index in range(int(seconds * fps)):
        t = index / fps
        fast = blur_from <= t < blur_to
        x = SIZE[0] / 2 + (90 if fast else 40) * math.sin(2 * math.pi * t / (0.5 if fast else 3.0))
        scale = 1.0 + 0.12 * math.sin(2 * math.pi * t / seconds)
        image, alpha, (cx, cy) = _posed(sprite, scale, 9 * math.sin(2 * math.pi * t / 2.2))
        frame = wall.copy()
        blend(frame, image, alpha, int(x - cx), int(SIZE[1] * 0.4 - cy))
        kernel = motion_kernel(x - previous_x, 0) if previous_x is not None else None
        if fast and kernel is not None:
            frame = cv2.filter2D(frame, -1, kernel)
        previous_x = x
        light = 1.0 + 0.15 * math.sin(2 * math.pi * t / 3.3)
        frame = np.clip(frame.astype(np.float32) * light, 0, 255).astype(np.uint8)
        yield noise.apply(frame, index)


def write_y4m(frames: Iterator[np.ndarray], path: Path, fps: int = 15) -> Path:
    """YUV4MPEG2 (4:2:0), the format Chromium's ``--use-file-for-fake-video-capture`` reads."""
    w, h = SIZE
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def write_video(frames: Iterator[np.ndarray], path: Path, fps: int = 15, codec: str = "libx264") -> Path:
    """An ordinary video file (MP4 with H.264 by default; ``libvpx`` for WebM), as a phone would upload."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
