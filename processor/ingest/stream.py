"""The steps of reading one connection, each a small object a :class:`~processor.ingest.camera.CameraSource`
runs for every packet or frame (and builds afresh at every connect):

- :class:`KeyframeGate`: after a (re)connect or a corrupt frame, discard packets and frames until a
  keyframe decodes clean;
- :class:`StallWatch`: no frame for ``stall_timeout_s`` (or no clean keyframe for ``keyframe_timeout_s``)
  ends the connection as stalled;
- :class:`Timestamps`: a missing pts is inferred, time going backwards is refused;
- :class:`CaptureClock`: when a live stream's frame was captured, on our clock, from its stream time;
- :class:`Sampler`: keeps the frames whose pts crosses the next sample instant of ``analysis_fps``;
- :class:`Pacer`: a file is handed out at the rate a camera would send it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger("rollcall.ingest")


class Failure(Exception):
    """A connection ended for a reason that is not an exception of PyAV (stall, end of stream)."""

    def __init__(self, message: str, streamed_s: float = 0.0):
        super().__init__(message)
        self.streamed_s = streamed_s  # how long the connection had streamed when it ended


class Stalled(Failure):
    pass


class KeyframeGate:
    """Frames are passed on only from a clean keyframe on: a client that joins a shared RTSP media while a
    keyframe is on the wire gets a corrupt picture and wrong-looking P-frames with no error."""

    def __init__(self, codec, camera_id: str):
        self._codec = codec
        self._camera_id = camera_id
        self.clean = False  # a clean keyframe decoded since the last (re)sync
        self.seeking = True  # waiting for a keyframe packet
        self.since = time.monotonic()  # since when a clean keyframe is awaited

    def admits_packet(self, packet) -> bool:
        """False for a packet to skip while waiting for a keyframe packet."""
        if self.seeking:
            if packet.size and not packet.is_keyframe:
                return False
            self.seeking = False
        return True

    def decode_failed(self) -> None:
        """A packet did not decode before the stream was clean (joining mid-stream): wait for the next keyframe."""
        self._codec.flush_buffers()
        self.seeking = True

    def admits_frame(self, frame) -> bool:
        """False for a frame to skip: not clean yet, or corrupt (then resync from the next keyframe)."""
        if not self.clean:
            if frame.key_frame and not frame.is_corrupt:
                self.clean = True
                return True
            if not self.seeking:
                self._codec.flush_buffers()  # forget the broken pictures
                self.seeking = True
            return False
        if frame.is_corrupt:
            log.debug("camera %s: corrupt frame; waiting for the next keyframe", self._camera_id)
            self.clean = False
            self.since = time.monotonic()
            self._codec.flush_buffers()
            self.seeking = True
            return False
        return True


class StallWatch:
    """When the last packet and the last clean frame came; raises :class:`Stalled` when they are too old."""

    def __init__(self, stall_s: float, keyframe_timeout_s: float):
        self.stall_s = stall_s
        self.keyframe_timeout_s = keyframe_timeout_s
        self.last_progress = time.monotonic()  # the last clean frame (or the connect)
        self.last_data = self.last_progress  # the last packet read

    def packet_read(self, gate: KeyframeGate) -> None:
        now = self.last_data = time.monotonic()
        if gate.clean and now - self.last_progress > self.stall_s:
            raise Stalled(f"stalled: no frame for {now - self.last_progress:.1f} s")
        if not gate.clean and now - gate.since > self.keyframe_timeout_s:
            raise Stalled(f"stalled: no clean keyframe for {now - gate.since:.1f} s")

    def progressed(self) -> float:
        """A clean frame came (or was handed out); returns the time of it."""
        self.last_progress = time.monotonic()
        return self.last_progress

    def read_failed(self, why: str) -> Failure:
        """The failure of a read that raised: a stall when PyAV's read timeout interrupted a blocked read."""
        idle = time.monotonic() - self.last_data
        if idle >= self.stall_s * 0.95:
            return Stalled(f"stalled: no data for {idle:.1f} s ({why})")
        return Failure(why)


class Timestamps:
    """The stream time (pts, seconds) of each clean frame, never going backwards."""

    UNTIMED_GRACE = 10  # frames without a pts dropped before the arrival time stands in for it

    def __init__(self, frame_step_s: float):
        self._step = frame_step_s  # nominal frame duration, to fill a missing pts
        self._untimed_run = 0
        self.last: float | None = None

    def repair(self, pts: float | None, arrival_s: float) -> float | None:
        """``pts``, or one inferred where it is missing; None: drop the frame (nothing to infer from)."""
        if pts is not None:
            self._untimed_run = 0
            return pts
        # RTSP: the first picture often comes before the first RTCP sender report, without a
        # timestamp. Infer it from the previous one; with nothing to infer from, drop it, and
        # fall back to the arrival time for a stream that never carries timestamps.
        self._untimed_run += 1
        if self.last is not None:
            return self.last + self._step
        if self._untimed_run <= self.UNTIMED_GRACE:
            return None
        return arrival_s

    def goes_back(self, pts: float) -> bool:
        # out of presentation order (a decoder that has not yet learnt the stream's B-frame
        # delay outputs the first frames as decoded): never hand out time going backwards
        return self.last is not None and pts <= self.last and self.last - pts < 2.0

    def advance(self, pts: float) -> float | None:
        """Take ``pts`` as the latest; returns the one before it."""
        previous, self.last = self.last, pts
        return previous


class CaptureClock:
    """When each frame of a live stream was captured, on our wall clock, from its stream time.

    A frame's packet arrives after the frame was captured; how long after, this side cannot see (network,
    the camera's encoder, and with B-frames the wait for the later picture a frame is predicted from: such a
    frame's packet comes frames after its capture). Taking each frame's own packet arrival would call a
    P-frame captured before the B-frames shown ahead of it. The estimate here is the latest capture clock
    consistent with every packet of the last ``window_s`` of stream time having arrived after its frame
    was captured: stream time + the least (arrival - stream time) of that window. It runs with the stream's
    clock, so the wait in our decoder (B-frame reordering: 2 packets on average with x264's defaults) and
    every queue after it count in the capture-to-event figures, and it moves with a camera clock that drifts.
    """

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self._offsets: deque[tuple[float, float]] = deque()  # (pts, arrival - pts), offsets increasing
        self._last_pts: float | None = None

    def captured(self, pts: float, arrived: float) -> float:
        """Take a frame's stream time and its packet's arrival (wall clock); its capture time."""
        if self._last_pts is not None and pts < self._last_pts:
            self._offsets.clear()  # the stream's clock went back (a restart): what was learnt is void
        self._last_pts = pts
        offsets = self._offsets
        offset = arrived - pts
        while offsets and offsets[-1][1] >= offset:
            offsets.pop()
        offsets.append((pts, offset))
        while offsets[0][0] < pts - self.window_s:
            offsets.popleft()
        return pts + offsets[0][1]


class Sampler:
    """Picks frames at ``fps`` of stream time: the first frame whose pts reaches each sample instant."""

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self._next: float | None = None

    def due(self, pts: float, previous: float | None) -> bool:
        if self._next is None or (previous is not None and pts < previous) or pts - self._next > 2.0:
            self._next = pts  # first frame, or a timestamp discontinuity
        if pts + 1e-3 < self._next:
            return False
        self._next = pts + self.interval if pts - self._next >= self.interval else self._next + self.interval
        return True


class Pacer:
    """A file is handed out at the rate a camera would: each frame waits until its pts, counted from the
    first frame's, has passed on the clock."""

    def __init__(self, stop: threading.Event):
        self._stop = stop
        self._origin: tuple[float, float] | None = None  # (pts, monotonic) of the first frame

    def wait_for(self, pts: float) -> bool:
        """Wait until the frame at ``pts`` is due; False when stopped meanwhile."""
        if self._origin is None:
            self._origin = (pts, time.monotonic())
        target = self._origin[1] + (pts - self._origin[0])
        while (wait := target - time.monotonic()) > 0:
            if self._stop.wait(min(wait, 0.5)):
                return False
        return True
