"""What flows between the processor's units: decoded frames, and the per-camera buffer they wait in.

A camera's decoder thread puts frames into its own :class:`FrameBuffer`; the batcher takes from all
buffers. The buffer is bounded, so a slow stage sheds frames instead of building latency or stalling
the RTSP session, and every drop is counted. Two strategies (Roboflow's InferencePipeline calls them
buffer strategies):

drop-oldest (door cameras)
    Keep the newest frames: a face is best recognised from the latest look at it.
spread (room cameras)
    Keep frames spread evenly over the last ``span_s`` seconds of stream time: when full, drop the frame
    whose loss leaves the smallest gap between the frames either side of it (the frame handed out last
    counts as the left neighbour of the oldest). A tracker that falls behind then sees the room at a
    lower but even rate (0.5 s apart) rather than a second-long jump after every slow batch, which is
    what makes two people crossing swap their tracks.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import numpy as np


class Frame:
    """One analysed frame of a camera. ``image`` (H x W x 3, BGR, uint8) is either given, or converted
    from the decoded picture (``decoded``, anything with ``to_ndarray(format="bgr24")``, e.g. a PyAV
    VideoFrame) the first time it is asked for: a frame shed by its bounded buffer is never converted
    (on a busy door 40-50 % of them). :func:`materialise` converts a batch's frames ahead, off the event
    loop and outside the inference gate."""

    __slots__ = ("camera_id", "seq", "pts_s", "captured_at", "_image", "_decoded")

    def __init__(self, camera_id: str, seq: int, pts_s: float, captured_at: float, image: np.ndarray | None = None,
                 *, decoded: Any = None):
        if image is None and decoded is None:
            raise ValueError("a frame needs an image or a decoded picture")
        self.camera_id = camera_id
        self.seq = seq  # analysed-frame number on this camera, from 0
        self.pts_s = pts_s  # stream time of the frame, seconds (from the decoder)
        # wall clock (time.time()) it was captured, read off the camera's clock (ingest.stream.CaptureClock;
        # a paced file: when it was handed out): the start of the latency budget
        self.captured_at = captured_at
        self._image = image
        self._decoded = decoded

    @property
    def image(self) -> np.ndarray:
        image = self._image
        if image is None:
            # Two threads may convert at once (the result is the same picture), but the second may find
            # ``_decoded`` already cleared by the first: then the first's image is there to take.
            decoded = self._decoded
            if decoded is None:
                return self._image
            image = self._image = decoded.to_ndarray(format="bgr24")
            self._decoded = None
        return image

    @property
    def converted(self) -> bool:
        return self._image is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), without converting the picture."""
        image = self._image
        if image is not None:
            return image.shape[1], image.shape[0]
        decoded = self._decoded
        if decoded is None:  # converted meanwhile by another thread
            return self._image.shape[1], self._image.shape[0]
        return decoded.width, decoded.height

    def grey(self, width: int, height: int) -> np.ndarray | None:
        """A ``width`` x ``height`` grey copy (area-averaged) scaled from the decoded picture, without
        converting it to BGR: what a motion check needs, for less than the conversion (160 x 90 from 720p:
        0.15 against 0.25 ms, best of three over 100 frames on the 2-core machine, 2026-12-04), and no BGR
        image is kept for a frame that coasts. None when there is no decoded picture left (an image given or
        converted): scale the image then."""
        decoded = self._decoded
        if self._image is not None or decoded is None or not hasattr(decoded, "reformat"):
            return None
        return decoded.reformat(width=width, height=height, format="gray", interpolation="AREA").to_ndarray()

    def __repr__(self) -> str:
        return (f"Frame({self.camera_id!r}, seq={self.seq}, pts_s={self.pts_s:.3f}, "
                f"{'converted' if self.converted else 'not converted'})")


def materialise(frames) -> None:
    """Convert every frame's image now (a worker thread's job: PyAV converts without the GIL)."""
    for frame in frames:
        frame.image  # noqa: B018 - converts and keeps it


class FrameBuffer:
    """Bounded, thread-safe buffer of one camera's frames: drop-oldest, or spread with ``span_s``.

    ``put`` is called from the camera's decoder thread and never blocks; ``take`` from the event loop.
    ``ready`` is an asyncio event set (thread-safely) whenever a frame is waiting.
    """

    def __init__(self, camera_id: str, capacity: int = 2, loop: asyncio.AbstractEventLoop | None = None, *,
                 span_s: float | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if span_s is not None and span_s <= 0:
            raise ValueError("span_s must be positive")
        self.camera_id = camera_id
        self.capacity = capacity
        self.span_s = span_s  # None: drop-oldest; else spread over this much stream time
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self._loop = loop
        self._last_taken_pts: float | None = None
        self.ready = asyncio.Event()
        # Set as well on every put: the batcher shares one wake-up event across all cameras.
        self.wakeup: asyncio.Event | None = None
        self.dropped = 0  # frames pushed out unanalysed

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def put(self, frame: Frame) -> None:
        with self._lock:
            frames = self._frames
            if self.span_s is not None and frames and frame.pts_s < frames[-1].pts_s:
                # the stream restarted (a reconnect): spacing against the old stream's times means
                # nothing, and the tracker is better off with the new stream at once
                self.dropped += len(frames)
                frames.clear()
                self._last_taken_pts = None
            frames.append(frame)
            if self.span_s is not None:
                while len(frames) > 1 and frame.pts_s - frames[0].pts_s > self.span_s:
                    frames.popleft()
                    self.dropped += 1
            while len(frames) > self.capacity:
                if self.span_s is None:
                    frames.popleft()
                else:
                    del frames[self._cheapest_to_drop()]
                self.dropped += 1
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._signal)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _cheapest_to_drop(self) -> int:
        """Index of the frame (never the newest) whose removal leaves the smallest gap."""
        frames = self._frames
        best, best_gap = 0, float("inf")
        for i in range(len(frames) - 1):
            if i > 0:
                before = frames[i - 1].pts_s
            elif self._last_taken_pts is not None and self._last_taken_pts <= frames[0].pts_s:
                before = self._last_taken_pts
            else:
                before = None  # nothing handed out before it: dropping the oldest leaves no gap
            gap = frames[i + 1].pts_s - before if before is not None else 0.0
            if gap < best_gap:
                best, best_gap = i, gap
        return best

    def _signal(self) -> None:
        self.ready.set()
        if self.wakeup is not None:
            self.wakeup.set()

    def take(self) -> Frame | None:
        """The oldest waiting frame, or None."""
        with self._lock:
            frame = self._frames.popleft() if self._frames else None
            if frame is not None:
                self._last_taken_pts = frame.pts_s
            if not self._frames:
                # cleared under the lock, so a put after this sets it again
                self.ready.clear()
            return frame

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
