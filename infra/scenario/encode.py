"""H.264 in MPEG-TS through PyAV's libx264, the way the loopback RTSP cameras want it.

yuv420p, a keyframe every second (late RTSP clients start fast), preset veryfast, and NOT
``tune=zerolatency``: its sliced-thread encode came out corrupted through the RTSP path.

No B-frames, as surveillance cameras send (IP-only GOPs are their default: a B-frame waits in the camera
for the later picture it is predicted from). x264's default 3 B-frames with a pyramid made a frame's packet
leave the loopback server up to 5 frames (0.5 s at 10 fps) after the frame's own time, and that wait, which
a campus's cameras do not have, was then the largest part of a door's capture-to-event figure.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

X264_PRESET = "veryfast"
X264_CRF = 23


class TsWriter:
    def __init__(self, path: Path, width: int, height: int, fps: int):
        self.width, self.height = width, height
        self.container = av.open(str(path), mode="w", format="mpegts")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {
            "preset": X264_PRESET,
            "crf": str(X264_CRF),
            "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0",
        }
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "TsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.container.close()
            except Exception:
                pass
