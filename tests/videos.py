"""Test videos whose every frame says its own number (8 white squares as bits at the top), so a
decoded frame can be matched to the exact picture that was encoded. Shared by the stack and ingest tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def numbered_picture(index: int, width: int, height: int) -> np.ndarray:
    """RGB picture number ``index``: gradients that move with the index, the number in bits at the top."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // width + index * 3) % 256
    img[..., 1] = y * 255 // height
    img[..., 2] = (x + y + index * 4) % 256
    img[:40, :330] = 0
    for bit in range(8):
        if (index >> bit) & 1:
            img[4:36, 4 + bit * 40:36 + bit * 40] = 255
    return img


def picture_number(img: np.ndarray) -> int:
    """The number written into a decoded picture (RGB or BGR: the squares are white)."""
    return sum(1 << bit for bit in range(8) if img[20, 20 + bit * 40].mean() > 127)


def make_numbered_video(path: Path, width: int, height: int, frames: int, fps: int,
                        preset: str = "veryfast") -> Path:
    """H.264 in MPEG-TS, a keyframe every second (a normal preset: zerolatency breaks the RTSP path)."""
    import av

    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(numbered_picture(i, width, height), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
