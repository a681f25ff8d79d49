"""A camera's ingest states, the record of a state change, and the options every camera is read with."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CameraState(str, enum.Enum):
    CONNECTING = "CONNECTING"
    STREAMING = "STREAMING"
    STALLED = "STALLED"
    BACKING_OFF = "BACKING_OFF"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Transition:
    at: float  # time.time() of the change
    monotonic: float  # time.monotonic() of the change
    old: CameraState | None
    new: CameraState
    reason: str
    delay_s: float | None = None  # BACKING_OFF: the chosen delay
    ceiling_s: float | None = None  # BACKING_OFF: min(cap, base * 2**(attempt - 1)), the jitter's upper bound


@dataclass(frozen=True)
class IngestOptions:
    """How every camera is read; the defaults suit real RTSP cameras."""

    buffer_capacity: int = 2  # per door camera, drop-oldest
    # Room cameras keep frames spread over this much stream time, at most one per 0.5 s of it (see
    # processor.frames): when the detector falls behind, person tracks need an even view of the room
    # more than the lowest latency. The span is also the delay a behind camera's frames wait: 2 s put
    # every room event of a busy machine past 2 s (bench capacity: room p95 2.3-3.6 s from two copies
    # on); 1 s halved it with attendance and handoff unchanged. At four copies the 1 s span was still the
    # largest part of a room event's delay (the deciding frame waited 0.45 s at the median, 1.1 s at p95,
    # of 0.8 s and 2 s): 0.5 s. A behind tracker sees the room at the rate it is served either way.
    room_buffer_s: float = 0.5
    stall_timeout_s: float = 5.0  # no frame (or no data) for this long -> STALLED -> reconnect; the read timeout
    keyframe_timeout_s: float = 12.0  # after a (re)connect or a corrupt frame: no clean keyframe -> STALLED
    open_timeout_s: float = 10.0  # connect + RTSP handshake + stream probe
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    healthy_after_s: float = 10.0  # a connection that streamed this long resets the backoff
    rtsp_transport: str = "tcp"
    analyzeduration_us: int = 500_000  # short probe: opens in ~0.6 s instead of ~1.9 s
    hwaccel: str = "auto"  # auto (cuda, then vaapi, else software), none, or an FFmpeg device type
    decoder_threads: int = 0  # 0 = FFmpeg's choice
    # SLICE, not FFmpeg's AUTO: frame threading holds every frame thread count - 1 more packets in the
    # decoder (the scenario's 720p door video: 2 packets from a packet to its frame against 0 with slices,
    # 200 ms at 10 fps, for 30 % more CPU: 1.50 against 1.13 s for its 750 frames). Cameras are decoded side
    # by side, a thread each, and a 720p frame takes ~1.5 ms on one core here: the parallelism inside one
    # decoder buys nothing but delay.
    decoder_thread_type: str = "SLICE"
    pace_files: bool = True
    # door cameras told they are idle decode keyframes only, while keyframes come at most this far apart
    idle_max_keyframe_gap_s: float = 2.0  # file:// and plain paths are read at their own frame rate, like a camera
    # ... and wake (every frame decoded, from the GOP's keyframe on) for idle_wake_hold_s when the bytes of
    # three P-frames exceed idle_wake_ratio x what a still doorway gives (and idle_wake_min_bytes); 0: off
    idle_wake_ratio: float = 4.0
    idle_wake_min_bytes: int = 1500
    idle_wake_hold_s: float = 2.0

    def __post_init__(self) -> None:
        if self.buffer_capacity < 1:
            raise ValueError("buffer_capacity must be at least 1")
        if self.decoder_thread_type not in ("SLICE", "FRAME", "AUTO", "NONE"):
            raise ValueError("decoder_thread_type must be SLICE, FRAME, AUTO or NONE")
        if self.stall_timeout_s <= 0 or self.open_timeout_s <= 0 or self.keyframe_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

