"""Ingest: one PyAV decoder thread per camera, sampled frames into the camera's drop-oldest buffer.

Each camera is a :class:`CameraSource`: a thread (off the event loop) that opens the stream (RTSP over
TCP by default), decodes it with FFmpeg's own threading (hardware decoding when the machine has it),
keeps the frames whose stream time (pts) crosses the next sample instant of the camera's
``analysis_fps``, and puts them, as BGR images, into the camera's :class:`~processor.frames.FrameBuffer`.

Every camera runs an explicit state machine, each transition logged (one line, camera id and reason)
and timestamped::

    CONNECTING  --first clean keyframe-->                          STREAMING
    CONNECTING  --open error / open timeout-->                     BACKING_OFF
    CONNECTING  --no clean keyframe for keyframe_timeout_s-->      STALLED
    STREAMING   --no frame (or no data) for stall_timeout_s-->     STALLED
    STREAMING   --end of stream / decode error-->                  BACKING_OFF
    STALLED     -->                                                BACKING_OFF
    BACKING_OFF --after the delay (full jitter)-->                 CONNECTING
    any state --stop()--> STOPPED

Any failure (open error, decode error, end of stream, stall) leads to a reconnect after an exponential
backoff with full jitter (``uniform(0, min(cap, base * 2**attempt))``, base 0.5 s, cap 30 s); the
attempt count goes back to 0 once a connection has streamed for ``healthy_after_s``. A blocking PyAV
read cannot be interrupted from another thread, so every open and read runs under ``av.open``'s
``timeout=(open, read)``: ``stop()`` and stall detection take effect within those bounds.

After every (re)connect frames are discarded until a keyframe decodes clean: a client that joins a
shared RTSP media while a keyframe is on the wire gets a corrupt picture and wrong-looking P-frames
with no error. A corrupt frame later on flushes the decoder and waits for the next keyframe as well.

:class:`IngestManager` holds the sources by camera id and follows configuration changes (``sync``)
without touching unchanged cameras. Counters are available as a plain dict (``stats()``) and as
Prometheus metrics with a ``camera`` label (the ``rollcall_camera_*`` series below).
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import math
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from prometheus_client import REGISTRY, Counter, Gauge

from processor.frames import Frame, FrameBuffer
from infra.foundation.embedded import current_state

log = logging.getLogger("rollcall.ingest")

__all__ = [
    "CameraSource", "CameraState", "Backoff", "IngestManager", "IngestOptions", "Transition",
    "choose_hwaccel", "redact", "resolve_camera_url",
]


# ------------------------------------------------------------------------------------------ metrics
def _metric(kind: type, name: str, documentation: str, labels: tuple[str, ...]):
    """Create a metric on the default registry, or return the one already there (module reloaded)."""
    try:
        return kind(name, documentation, list(labels))
    except ValueError:  # "Duplicated timeseries": registered by an earlier import of this module
        existing = REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - no public lookup exists
        if existing is None or not isinstance(existing, kind):
            raise
        return existing


FRAMES_DECODED = _metric(Counter, "rollcall_camera_frames_decoded_total",
                         "Frames the camera's decoder produced", ("camera",))
FRAMES_ANALYSED = _metric(Counter, "rollcall_camera_frames_analysed_total",
                          "Frames sampled at analysis_fps and put into the camera's buffer", ("camera",))
FRAMES_DROPPED = _metric(Counter, "rollcall_camera_frames_dropped_total",
                         "Sampled frames pushed out of the camera's buffer unanalysed (drop-oldest)", ("camera",))
FRAMES_SKIPPED = _metric(Counter, "rollcall_camera_frames_skipped_total",
                         "Decoded frames discarded until a keyframe decodes clean (corrupt or partial)",
                         ("camera",))
RECONNECTS = _metric(Counter, "rollcall_camera_reconnects_total",
                     "Connection attempts after a failure", ("camera",))
STATE = _metric(Gauge, "rollcall_camera_state", "1 for the camera's current ingest state, 0 for the others",
                ("camera", "state"))


# ------------------------------------------------------------------------------------------- states
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
    ceiling_s: float | None = None  # BACKING_OFF: min(cap, base * 2**attempt), the jitter's upper bound


class Backoff:
    """Exponential backoff with full jitter: delay = uniform(0, min(cap, base * 2**attempt))."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap_s, self.base_s * 2 ** min(self.attempt, 62))

    def next_delay(self) -> tuple[float, float]:
        """(delay, ceiling) for this attempt; the next attempt's ceiling doubles (up to the cap)."""
        ceiling = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling), ceiling

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class IngestOptions:
    """How every camera is read; the defaults suit real RTSP cameras."""

    buffer_capacity: int = 2  # per door camera, drop-oldest
    # Room cameras keep frames spread over this much stream time, at most one per 0.5 s of it (see
    # processor.frames): when the detector falls behind, person tracks need an even view of the room
    # more than the lowest latency.
    room_buffer_s: float = 2.0
    stall_timeout_s: float = 5.0  # no frame (or no data) for this long -> STALLED -> reconnect; the read timeout
    keyframe_timeout_s: float = 12.0  # after a (re)connect or a corrupt frame: no clean keyframe -> STALLED
    open_timeout_s: float = 10.0  # connect + RTSP handshake + stream probe
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    healthy_after_s: float = 10.0  # a connection that streamed this long resets the backoff
    rtsp_transport: str = "tcp"
    analyzeduration_us: int = 500_000  # short probe: opens in ~0.6 s instead of ~1.9 s
    hwaccel: str = "auto"  # auto (cuda, then vaapi, else software), none, or an FFmpeg device type
    decoder_threads: int = 0  # 0 = FFmpeg's choice (thread_type AUTO)
    pace_files: bool = True  # file:// and plain paths are read at their own frame rate, like a camera

    def __post_init__(self) -> None:
        if self.buffer_capacity < 1:
            raise ValueError("buffer_capacity must be at least 1")
        if self.stall_timeout_s <= 0 or self.open_timeout_s <= 0 or self.keyframe_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


# ---------------------------------------------------------------------------------------- hardware
_HW_LOCK = threading.Lock()
_HW_CHOICE: dict[str, str | None] = {}
_HW_CANDIDATES = ("cuda", "vaapi")


def _probe_clip() -> bytes:
    """Two frames of 128x128 H.264 in MPEG-TS, made here with libx264: what a probe decodes."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 60 * i, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


def _probe_device(device: str) -> str | None:
    """None when ``device`` decodes H.264 here, else why not."""
    import av
    from av.codec.hwaccel import HWAccel

    try:
        with av.open(io.BytesIO(_probe_clip()), hwaccel=HWAccel(device, allow_software_fallback=False)) as container:
            frames = sum(1 for _ in container.decode(container.streams.video[0]))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return None if frames else "decoded no frames"


def choose_hwaccel(preference: str = "auto") -> str | None:
    """The FFmpeg hardware device type to decode with, or None for software (probed once per process).

    ``auto`` tries cuda then vaapi; ``none``/``software`` never probes; any other value is that device
    type only. A device that is compiled in but absent or unusable falls back to software with a log line.
    """
    preference = (preference or "none").lower()
    if preference in ("none", "software", "off", "cpu"):
        return None
    with _HW_LOCK:
        if preference in _HW_CHOICE:
            return _HW_CHOICE[preference]
        try:
            from av.codec.hwaccel import hwdevices_available

            available = set(hwdevices_available())
        except Exception as exc:  # noqa: BLE001
            available = set()
            log.info("hardware decoding: cannot list devices (%s)", exc)
        candidates = _HW_CANDIDATES if preference == "auto" else (preference,)
        choice, tried = None, []
        for device in candidates:
            if device not in available:
                tried.append(f"{device}: not in this FFmpeg build")
                continue
            problem = _probe_device(device)
            if problem is None:
                choice = device
                break
            tried.append(f"{device}: {problem}")
        if choice:
            log.info("hardware decoding with %s", choice)
        else:
            log.info("hardware decoding unavailable (%s); decoding in software", "; ".join(tried) or "nothing to try")
        _HW_CHOICE[preference] = choice
        return choice


# -------------------------------------------------------------------------------------------- urls
def resolve_camera_url(url: str) -> str:
    """``embedded:<mount>`` -> the running embedded stack's RTSP URL; anything else unchanged."""
    if not url.startswith("embedded:"):
        return url
    state = current_state()
    if state is None or not state.is_running("rtsp"):
        raise RuntimeError(f"camera url {url}: the embedded RTSP server is not running (run `rollcall up`)")
    return state.rtsp_url(url.removeprefix("embedded:"))


_LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def _is_live(url: str) -> bool:
    return url.lower().startswith(_LIVE_SCHEMES)


_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"]*@")


def redact(text: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://***@cam/stream``: logs and stats never carry passwords."""
    return _CREDENTIALS.sub(r"\1***@", text)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}")[:300]


class _Failure(Exception):
    """A connection ended for a reason that is not an exception of PyAV (stall, end of stream)."""


class _Stalled(_Failure):
    pass


# ---------------------------------------------------------------------------------------- a camera
class CameraSource:
    """One camera: a decoder thread with its state machine, feeding ``buffer``.

    ``start()`` starts the thread; ``stop()`` asks it to end (returns at once); ``join()`` waits. The
    ``resolve_url`` callable turns the configured URL into the one to open, at every connect.
    """

    def __init__(self, camera_id: str, url: str, analysis_fps: float = 5.0, *,
                 buffer: FrameBuffer | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 options: IngestOptions | None = None, resolve_url: Callable[[str], str] | None = None,
                 first_seq: int = 0, rng: random.Random | None = None):
        if analysis_fps <= 0:
            raise ValueError("analysis_fps must be positive")
        self.camera_id = camera_id
        self.url = url
        self.analysis_fps = float(analysis_fps)
        self.options = options or IngestOptions()
        self.buffer = buffer if buffer is not None else FrameBuffer(camera_id, self.options.buffer_capacity, loop)
        self._resolve = resolve_url or resolve_camera_url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(self.options.backoff_base_s, self.options.backoff_cap_s, rng)
        self.transitions: deque[Transition] = deque(maxlen=100)
        self._state: CameraState | None = None
        self._state_since = time.time()
        self._state_since_mono = time.monotonic()
        # counters (written by the decoder thread only)
        self.decoded = 0  # frames out of the decoder
        self.analysed = 0  # sampled frames put into the buffer
        self.not_sampled = 0  # clean frames between two sample instants
        self.out_of_order = 0  # clean frames whose pts is not after the previous one's (dropped)
        self.untimed = 0  # clean frames without a pts and nothing to infer it from (dropped)
        self.skipped = 0  # frames discarded until a keyframe decodes clean
        self.skipped_packets = 0  # packets discarded while waiting for a keyframe
        self.corrupt = 0  # frames the decoder flagged corrupt
        self.decode_errors = 0
        self.reconnects = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.open_s: float | None = None  # last successful av.open
        self.first_frame_s: float | None = None  # last connect: from CONNECTING to the first clean frame
        self.hwaccel: str | None = None
        self.resolution: tuple[int, int] | None = None  # (width, height) of the last frame
        self.last_frame_at: float | None = None  # time.time() of the last clean frame
        self._seq = first_seq
        self._dropped_seen = self.buffer.dropped
        self._publish_state = True  # off once retired: the camera's gauge belongs to its successor
        self._metrics = (FRAMES_DECODED.labels(camera_id), FRAMES_ANALYSED.labels(camera_id),
                         FRAMES_DROPPED.labels(camera_id), FRAMES_SKIPPED.labels(camera_id),
                         RECONNECTS.labels(camera_id))

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "CameraSource":
        if self._thread is not None:
            raise RuntimeError(f"camera {self.camera_id}: already started")
        self._thread = threading.Thread(target=self._run, name=f"ingest-{self.camera_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end; it does within the open/read timeouts at worst. Does not wait."""
        self._stop.set()

    def _retire(self) -> None:
        self._publish_state = False
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def max_stop_s(self) -> float:
        """The longest stop() can take: a blocked open or read runs out its timeout, then closes."""
        return self.options.open_timeout_s + self.options.stall_timeout_s + 2.0

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> CameraState | None:
        return self._state

    @property
    def next_seq(self) -> int:
        return self._seq

    def stats(self) -> dict[str, Any]:
        with self._lock:
            state, since, since_mono = self._state, self._state_since, self._state_since_mono
        return {
            "camera_id": self.camera_id,
            "url": redact(self.url),
            "analysis_fps": self.analysis_fps,
            "state": state.value if state else None,
            "state_since": since,
            "time_in_state_s": round(time.monotonic() - since_mono, 3),
            "decoded": self.decoded,
            "analysed": self.analysed,
            "dropped": self.buffer.dropped,
            "buffered": len(self.buffer),
            "not_sampled": self.not_sampled,
            "out_of_order": self.out_of_order,
            "untimed": self.untimed,
            "skipped": self.skipped,
            "skipped_packets": self.skipped_packets,
            "corrupt": self.corrupt,
            "decode_errors": self.decode_errors,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "open_s": self.open_s,
            "first_frame_s": self.first_frame_s,
            "hwaccel": self.hwaccel or "software",
            "resolution": self.resolution,
            "last_frame_at": self.last_frame_at,
            "backoff_attempt": self._backoff.attempt,
        }

    # -- state machine ---------------------------------------------------------------------------
    def _set_state(self, new: CameraState, reason: str, *, delay_s: float | None = None,
                   ceiling_s: float | None = None) -> None:
        now, mono = time.time(), time.monotonic()
        with self._lock:
            old = self._state
            held = mono - self._state_since_mono
            self._state, self._state_since, self._state_since_mono = new, now, mono
            self.transitions.append(Transition(now, mono, old, new, reason, delay_s, ceiling_s))
        if self._publish_state:
            for state in CameraState:
                STATE.labels(self.camera_id, state.value).set(1 if state is new else 0)
        level = logging.WARNING if new in (CameraState.STALLED, CameraState.BACKING_OFF) else logging.INFO
        log.log(level, "camera %s: %s -> %s after %.2f s (%s)", self.camera_id,
                old.value if old else "-", new.value, held if old else 0.0, reason)

    def _run(self) -> None:
        reason = "started"
        try:
            while not self._stop.is_set():
                if reason != "started":
                    self.reconnects += 1
                    self._metrics[4].inc()
                    reason = f"reconnect {self.reconnects} after: {reason}"
                self._set_state(CameraState.CONNECTING, reason)
                streamed_s = 0.0
                try:
                    streamed_s = self._connection()
                    if self._stop.is_set():
                        break
                    raise _Failure("end of stream")
                except _Stalled as exc:
                    streamed_s = getattr(exc, "streamed_s", 0.0)
                    reason = str(exc)
                    self._set_state(CameraState.STALLED, reason)
                except Exception as exc:  # noqa: BLE001 - every failure reconnects; none ends the thread
                    streamed_s = getattr(exc, "streamed_s", streamed_s)
                    reason = str(exc) if isinstance(exc, _Failure) else _describe(exc)
                if self._stop.is_set():
                    break
                self.failures += 1
                self.last_error, self.last_error_at = reason, time.time()
                if streamed_s >= self.options.healthy_after_s:
                    self._backoff.reset()
                delay, ceiling = self._backoff.next_delay()
                self._set_state(CameraState.BACKING_OFF, f"{reason}; retry in {delay:.2f} s",
                                delay_s=delay, ceiling_s=ceiling)
                if self._stop.wait(delay):
                    break
        except BaseException as exc:  # pragma: no cover - a bug here must still leave a trace
            log.exception("camera %s: ingest thread failed", self.camera_id)
            self.last_error, self.last_error_at = _describe(exc), time.time()
        finally:
            self._set_state(CameraState.STOPPED, "stopped" if self._stop.is_set() else "thread ended")

    # -- one connection --------------------------------------------------------------------------
    def _open(self):
        import av

        url = self._resolve(self.url)
        opts = self.options
        options = {"rtsp_transport": opts.rtsp_transport, "analyzeduration": str(opts.analyzeduration_us),
                   # socket I/O timeout (µs) of the rtsp/http protocols, beside PyAV's own interrupt timeout
                   "timeout": str(int(max(opts.open_timeout_s, opts.stall_timeout_s) * 1e6))}
        if not url.lower().startswith(("rtsp://", "rtsps://")):
            options.pop("rtsp_transport")
        device = choose_hwaccel(opts.hwaccel)
        hwaccel = None
        if device:
            from av.codec.hwaccel import HWAccel

            hwaccel = HWAccel(device, allow_software_fallback=True)
        started = time.monotonic()
        try:
            container = av.open(url, options=options, timeout=(opts.open_timeout_s, opts.stall_timeout_s),
                                hwaccel=hwaccel)
        except av.FFmpegError as exc:
            took = time.monotonic() - started
            if took >= opts.open_timeout_s * 0.95:  # PyAV's interrupt: FFmpeg reports it as some I/O error
                raise _Failure(f"open timed out after {took:.1f} s ({_describe(exc)})") from None
            raise _Failure(f"open failed: {_describe(exc)}") from None
        self.open_s = round(time.monotonic() - started, 3)
        return container, url

    def _connection(self) -> float:
        """Open, decode and sample until stop (returns) or a failure (raises). Returns seconds streamed."""
        import av

        started = time.monotonic()
        container, url = self._open()
        streaming_since: float | None = None
        last_progress = time.monotonic()  # the last clean frame (or the connect)
        last_data = last_progress  # the last packet read
        resync_since = last_progress  # since when a clean keyframe is awaited
        stall = self.options.stall_timeout_s
        keyframe_timeout = self.options.keyframe_timeout_s

        def streamed() -> float:
            return time.monotonic() - streaming_since if streaming_since else 0.0

        def fail(exc_type, message):
            exc = exc_type(message)
            exc.streamed_s = streamed()
            return exc

        try:
            if not container.streams.video:
                raise fail(_Failure, f"no video stream in {redact(url)}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.options.decoder_threads:
                stream.codec_context.thread_count = self.options.decoder_threads
            codec = stream.codec_context
            live = _is_live(url) or not self.options.pace_files
            interval = 1.0 / self.analysis_fps
            next_sample: float | None = None
            last_pts: float | None = None
            pace_origin: tuple[float, float] | None = None  # (pts, monotonic) for files read at their rate
            rate = stream.average_rate or stream.guessed_rate
            step = 1.0 / float(rate) if rate else 0.04  # nominal frame duration, to fill a missing pts
            untimed_run = 0
            clean = False  # a clean keyframe decoded since the last (re)sync
            seeking = True  # waiting for a keyframe packet
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return streamed()
                now = last_data = time.monotonic()
                if clean and now - last_progress > stall:
                    raise fail(_Stalled, f"stalled: no frame for {now - last_progress:.1f} s")
                if not clean and now - resync_since > keyframe_timeout:
                    raise fail(_Stalled, f"stalled: no clean keyframe for {now - resync_since:.1f} s")
                if seeking:
                    if packet.size and not packet.is_keyframe:
                        self.skipped_packets += 1
                        continue
                    seeking = False
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:
                    self.decode_errors += 1
                    if clean:
                        raise fail(_Failure, f"decode error: {_describe(exc)}") from None
                    codec.flush_buffers()  # joining mid-stream: wait for the next keyframe
                    seeking = True
                    continue
                for frame in frames:
                    self.decoded += 1
                    self._metrics[0].inc()
                    if frame.is_corrupt:
                        self.corrupt += 1
                    if not clean:
                        if frame.key_frame and not frame.is_corrupt:
                            clean = True
                        else:
                            self._skip()
                            if not seeking:
                                codec.flush_buffers()  # forget the broken pictures
                                seeking = True
                            continue
                    elif frame.is_corrupt:
                        log.debug("camera %s: corrupt frame; waiting for the next keyframe", self.camera_id)
                        clean = False
                        resync_since = time.monotonic()
                        codec.flush_buffers()
                        seeking = True
                        self._skip()
                        continue
                    last_progress = time.monotonic()
                    if streaming_since is None:
                        streaming_since = last_progress
                        self.first_frame_s = round(last_progress - started, 3)
                        # the device when the decoder really runs on it (it may fall back to software)
                        self.hwaccel = choose_hwaccel(self.options.hwaccel) if codec.is_hwaccel else None
                        self._set_state(CameraState.STREAMING,
                                        f"first clean keyframe {self.first_frame_s:.2f} s after connecting "
                                        f"(open {self.open_s:.2f} s, {self.hwaccel or 'software'} decoding)")
                    elif last_progress - streaming_since >= self.options.healthy_after_s:
                        self._backoff.reset()
                    pts = frame.time
                    if pts is None:
                        # RTSP: the first picture often comes before the first RTCP sender report, without a
                        # timestamp. Infer it from the previous one; with nothing to infer from, drop it, and
                        # fall back to the arrival time for a stream that never carries timestamps.
                        untimed_run += 1
                        if last_pts is not None:
                            pts = last_pts + step
                        elif untimed_run <= 10:
                            self.untimed += 1
                            continue
                        else:
                            pts = last_progress - started
                    else:
                        untimed_run = 0
                    if last_pts is not None and pts <= last_pts and last_pts - pts < 2.0:
                        # out of presentation order (a decoder that has not yet learnt the stream's B-frame
                        # delay outputs the first frames as decoded): never hand out time going backwards
                        self.out_of_order += 1
                        continue
                    if next_sample is None or (last_pts is not None and pts < last_pts) or pts - next_sample > 2.0:
                        next_sample = pts  # first frame, or a timestamp discontinuity
                    last_pts = pts
                    if pts + 1e-3 < next_sample:
                        self.not_sampled += 1
                        continue
                    next_sample = pts + interval if pts - next_sample >= interval else next_sample + interval
                    if not live:  # a file: hand frames out at the rate a camera would
                        if pace_origin is None:
                            pace_origin = (pts, time.monotonic())
                        target = pace_origin[1] + (pts - pace_origin[0])
                        while (wait := target - time.monotonic()) > 0:
                            if self._stop.wait(min(wait, 0.5)):
                                return streamed()
                        last_progress = time.monotonic()
                    self._emit(frame, pts)
            return streamed()
        except av.FFmpegError as exc:
            idle = time.monotonic() - last_data
            if idle >= stall * 0.95:  # the read timeout (PyAV's interrupt) ended a blocked read
                raise fail(_Stalled, f"stalled: no data for {idle:.1f} s ({_describe(exc)})") from None
            raise fail(_Failure, _describe(exc)) from None
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass

    def _skip(self) -> None:
        self.skipped += 1
        self._metrics[3].inc()

    def _emit(self, frame, pts: float) -> None:
        image = frame.to_ndarray(format="bgr24")
        self.resolution = (image.shape[1], image.shape[0])
        captured = time.time()
        self.last_frame_at = captured
        if self._stop.is_set():
            return  # a restarted camera's successor owns the buffer now
        self.buffer.put(Frame(self.camera_id, self._seq, float(pts), captured, image))
        self._seq += 1
        self.analysed += 1
        self._metrics[1].inc()
        dropped = self.buffer.dropped
        if dropped != self._dropped_seen:
            self._metrics[2].inc(max(0, dropped - self._dropped_seen))
            self._dropped_seen = dropped


# ------------------------------------------------------------------------------------------ manager
class CameraLike(Protocol):
    id: str
    url: str
    analysis_fps: float
    enabled: bool


class IngestManager:
    """The cameras' sources by id; follows the configuration with ``sync`` (config reload)."""

    def __init__(self, options: IngestOptions | None = None, *, loop: asyncio.AbstractEventLoop | None = None):
        self.options = options or IngestOptions()
        self._loop = loop
        self._sources: dict[str, CameraSource] = {}
        self._retiring: list[CameraSource] = []  # stopped, maybe still inside a blocking read

    def sync(self, cameras: Iterable[CameraLike], resolve_url: Callable[[str], str] | None = None
             ) -> dict[str, list[str]]:
        """Start new cameras, stop removed or disabled ones, restart those whose url or fps changed.

        Call it on the event loop (the buffers are bound to the running loop). Unchanged cameras are
        not touched: same source object, same thread. Never blocks: stopped sources end on their own.
        """
        loop = self._loop or asyncio.get_running_loop()
        resolve = resolve_url or resolve_camera_url
        wanted: dict[str, CameraLike] = {}
        for camera in cameras:
            if getattr(camera, "enabled", True):
                wanted[camera.id] = camera
        result: dict[str, list[str]] = {"added": [], "removed": [], "restarted": [], "unchanged": []}
        for camera_id in [cid for cid in self._sources if cid not in wanted]:
            source = self._sources.pop(camera_id)
            source._retire()
            self._retiring.append(source)
            self._forget_metrics(camera_id)
            result["removed"].append(camera_id)
            log.info("camera %s: removed from the configuration", camera_id)
        for camera_id, camera in wanted.items():
            fps = float(getattr(camera, "analysis_fps", 5.0))
            current = self._sources.get(camera_id)
            if current is not None and current.url == camera.url and current.analysis_fps == fps:
                current._resolve = resolve  # used from its next connect on
                result["unchanged"].append(camera_id)
                continue
            buffer, first_seq = None, 0
            if current is not None:
                current._retire()
                self._retiring.append(current)
                buffer, first_seq = current.buffer, current.next_seq  # the batcher keeps its buffer
                log.info("camera %s: configuration changed (url or analysis_fps); restarting", camera_id)
            if buffer is None:
                if getattr(camera, "role", None) == "room":
                    span = self.options.room_buffer_s
                    capacity = max(self.options.buffer_capacity, int(math.ceil(min(fps, 2.0) * span)))
                    buffer = FrameBuffer(camera_id, capacity, loop, span_s=span)
                else:
                    buffer = FrameBuffer(camera_id, self.options.buffer_capacity, loop)
            source = CameraSource(camera_id, camera.url, fps, buffer=buffer, options=self.options,
                                  resolve_url=resolve, first_seq=first_seq)
            self._sources[camera_id] = source
            source.start()
            result["restarted" if current is not None else "added"].append(camera_id)
        self._retiring = [s for s in self._retiring if s.alive]
        return result

    def source(self, camera_id: str) -> CameraSource:
        return self._sources[camera_id]

    def sources(self) -> dict[str, CameraSource]:
        return dict(self._sources)

    def buffers(self) -> dict[str, FrameBuffer]:
        return {camera_id: source.buffer for camera_id, source in self._sources.items()}

    def stats(self) -> dict[str, dict[str, Any]]:
        return {camera_id: source.stats() for camera_id, source in self._sources.items()}

    async def stop(self, timeout: float | None = None) -> list[str]:
        """Stop every source and wait for the threads (bounded); returns the ids still running."""
        sources = list(self._sources.values()) + self._retiring
        for source in sources:
            source._retire()  # a thread that ends later must not bring its series back
        limit = timeout if timeout is not None else max((s.max_stop_s for s in sources), default=0.0)
        deadline = time.monotonic() + limit
        while any(s.alive for s in sources) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = [s.camera_id for s in sources if s.alive]
        if left:
            log.warning("ingest: threads of %s still in a blocking read after %.1f s; left to end on their own",
                        ", ".join(left), limit)
        for camera_id in self._sources:
            self._forget_metrics(camera_id)
        self._sources.clear()
        self._retiring = [s for s in self._retiring if s.alive]
        return left

    @staticmethod
    def _forget_metrics(camera_id: str) -> None:
        for metric in (FRAMES_DECODED, FRAMES_ANALYSED, FRAMES_DROPPED, FRAMES_SKIPPED, RECONNECTS):
            try:
                metric.remove(camera_id)
            except KeyError:
                pass
        for state in CameraState:
            try:
                STATE.remove(camera_id, state.value)
            except KeyError:
                pass
