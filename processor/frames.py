"""What flows between the processor's units: decoded frames, and the per-camera buffer they wait in.

A camera's decoder thread puts frames into its own :class:`FrameBuffer`; the batcher takes from all
buffers. The buffer keeps only the newest frames (drop-oldest), so a slow stage sheds frames instead of
building latency or stalling the RTSP session, and every drop is counted.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    camera_id: str
    seq: int  # analysed-frame number on this camera, from 0
    pts_s: float  # stream time of the frame, seconds (from the decoder)
    captured_at: float  # wall clock (time.time()) when it was decoded: start of the latency budget
    image: np.ndarray  # H x W x 3, BGR, uint8


class FrameBuffer:
    """Bounded, thread-safe, drop-oldest buffer of one camera's frames.

    ``put`` is called from the camera's decoder thread and never blocks; ``take`` from the event loop.
    ``ready`` is an asyncio event set (thread-safely) whenever a frame is waiting.
    """

    def __init__(self, camera_id: str, capacity: int = 2, loop: asyncio.AbstractEventLoop | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.camera_id = camera_id
        self.capacity = capacity
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self._loop = loop
        self.ready = asyncio.Event()
        # Set as well on every put: the batcher shares one wake-up event across all cameras.
        self.wakeup: asyncio.Event | None = None
        self.dropped = 0  # frames pushed out unanalysed because a newer one arrived

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def put(self, frame: Frame) -> None:
        with self._lock:
            if len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._signal)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _signal(self) -> None:
        self.ready.set()
        if self.wakeup is not None:
            self.wakeup.set()

    def take(self) -> Frame | None:
        """The oldest waiting frame, or None."""
        with self._lock:
            frame = self._frames.popleft() if self._frames else None
            if not self._frames:
                # cleared under the lock, so a put after this sets it again
                self.ready.clear()
            return frame

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
