"""What the processor benchmarks share: frames loaded from a rendered video, latency percentiles."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def percentiles_ms(latencies_s: list[float]):
    """q -> the q-th percentile of the latencies in milliseconds (None without any)."""
    latencies_ms = sorted(x * 1000 for x in latencies_s)

    def pct(q: float):
        return round(float(np.percentile(latencies_ms, q)), 1) if latencies_ms else None

    return pct


def load_frames(video: Path, *, start_s: float, count: int, every: int = 1) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if frame.time is not None and frame.time < start_s:
                continue
            if index % every == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames
