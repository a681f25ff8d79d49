"""Small drawing helpers shared by the door and room cameras: blending, texture, sensor noise."""

from __future__ import annotations

import cv2
import numpy as np


def blend(frame: np.ndarray, image: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend ``image`` (float or uint8, HxWx3) into ``frame`` (uint8) with its top-left at (x0, y0)."""
    h, w = alpha.shape[:2]
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + w), min(frame.shape[0], y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0, None].astype(np.float32)
    src = image[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
    roi = frame[fy0:fy1, fx0:fx1]
    roi[:] = np.clip(roi.astype(np.float32) * (1 - a) + src * a + 0.5, 0, 255).astype(np.uint8)


def texture(shape: tuple[int, int], rng: np.random.Generator, scale: float, amount: float) -> np.ndarray:
    """Smooth random texture around 1.0 (multiply a colour by it), features ~``scale`` px."""
    h, w = shape
    small = rng.normal(0, 1, (max(2, int(h / scale)), max(2, int(w / scale)))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return 1 + amount * big / (big.std() + 1e-6)


def vignette(shape: tuple[int, int], strength: float) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2
    return (1 - strength * r2 / 2).astype(np.float32)


class SensorNoise:
    """A few fixed fields of Gaussian noise, cycled pseudo-randomly (cheap, and cheap to encode)."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, sigma: float = 1.5, fields: int = 6):
        self.fields = [rng.normal(0, sigma, (*shape, 3)).astype(np.int16) for _ in range(fields)]
        self.order = rng.integers(0, fields, 4096)

    def apply(self, frame: np.ndarray, index: int) -> np.ndarray:
        noisy = frame.astype(np.int16)
        noisy += self.fields[self.order[index % len(self.order)]]
        return np.clip(noisy, 0, 255).astype(np.uint8)


def motion_kernel(dx: float, dy: float) -> np.ndarray | None:
    """Normalised line kernel for a motion of (dx, dy) px during the exposure; None when negligible."""
    length = float(np.hypot(dx, dy))
    if length < 1.5:
        return None
    n = int(min(11, round(length))) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    ux, uy = dx / length, dy / length
    for s in np.linspace(-c, c, 2 * n):
        k[int(round(c + s * uy)), int(round(c + s * ux))] = 1
    return k / k.sum()
