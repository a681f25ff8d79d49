"""One camera: :class:`CameraSource`, a decoder thread with its state machine (see ``processor.ingest``),
feeding the camera's :class:`~processor.frames.FrameBuffer`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from tenacity import AttemptManager, RetryCallState

from infra.foundation import retry
from infra.foundation.camera_urls import describe, is_live, redact, resolve_camera_url
from processor.frames import Frame, FrameBuffer
from processor.ingest import metrics
from processor.ingest.hwaccel import choose_hwaccel
from processor.ingest.options import CameraState, IngestOptions, Transition
from processor.ingest.idle import IdleDecode
from processor.ingest.stream import (CaptureClock, Failure, KeyframeGate, Pacer, Sampler, Stalled, StallWatch,
                                     Timestamps)

log = logging.getLogger("rollcall.ingest")


@dataclass
class _Connection:
    """One open connection and its reading steps (processor.ingest.stream)."""

    container: Any
    stream: Any
    live: bool  # a network stream; a file is paced to its own frame rate
    started: float  # time.monotonic() of the connect
    gate: KeyframeGate
    watch: StallWatch
    timestamps: Timestamps
    sampler: Sampler
    pacer: Pacer
    idle: IdleDecode
    capture_clock: CaptureClock
    streaming_since: float | None = None  # time.monotonic() of the first clean frame

    def streamed(self) -> float:
        return time.monotonic() - self.streaming_since if self.streaming_since else 0.0


class CameraSource:
    """One camera: a decoder thread with its state machine, feeding ``buffer``.

    ``start()`` starts the thread; ``stop()`` asks it to end (returns at once); ``join()`` waits. The
    ``resolve_url`` callable turns the configured URL into the one to open, at every connect.
    """

    def __init__(self, camera_id: str, url: str, analysis_fps: float = 5.0, *,
                 buffer: FrameBuffer | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 options: IngestOptions | None = None, resolve_url: Callable[[str], str] | None = None,
                 first_seq: int = 0):
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
        # every failure reconnects after an exponential delay with full jitter (the BACKING_OFF state)
        self._retrying = retry.reconnecting_in_thread(
            what=f"camera {camera_id}", errors=(Exception,), first_s=self.options.backoff_base_s,
            max_s=self.options.backoff_cap_s, jitter=True, on_retry=self._backing_off, sleep=self._stop.wait)
        self._attempt: AttemptManager | None = None
        self.transitions: deque[Transition] = deque(maxlen=100)
        self._state: CameraState | None = None
        self._state_since = time.time()
        self._state_since_mono = time.monotonic()
        # counters (written by the decoder thread only)
        self.packets = 0  # video packets read (a frame each): the stream time gone by, decoded or not
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
        self._counters = metrics.CameraCounters.of(camera_id)
        # door cameras: decode keyframes only while nobody is at the door (set_idle from the pipeline)
        self._idle_wanted = False
        self._idle: IdleDecode | None = None

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

    def set_idle(self, idle: bool) -> None:
        """Nobody in view (door cameras): decode keyframes only until someone is (see IdleDecode)."""
        self._idle_wanted = idle
        if self._idle is not None:
            self._idle.wanted = idle

    @property
    def keyframes_only(self) -> bool:
        return self._idle is not None and self._idle.keyframes_only

    @property
    def keyframe_gap_s(self) -> float | None:
        return self._idle.gap_s if self._idle is not None else None

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

    @property
    def backoff_attempt(self) -> int:
        """Failures since the camera last streamed for ``healthy_after_s`` (the backoff's exponent)."""
        return self._attempt.retry_state.attempt_number - 1 if self._attempt is not None else 0

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
            "packets": self.packets,
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
            "keyframes_only": self.keyframes_only,
            "keyframe_gap_s": self._idle.gap_s if self._idle is not None else None,
            "resolution": self.resolution,
            "last_frame_at": self.last_frame_at,
            "backoff_attempt": self.backoff_attempt,
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
            metrics.show_state(self.camera_id, new)
        level = logging.WARNING if new in (CameraState.STALLED, CameraState.BACKING_OFF) else logging.INFO
        log.log(level, "camera %s: %s -> %s after %.2f s (%s)", self.camera_id,
                old.value if old else "-", new.value, held if old else 0.0, reason)

    def set_analysis_fps(self, fps: float) -> None:
        """Analyse at another rate from the next frame on, without reconnecting (a reconnect costs a second
        or two of the stream: a standby taking its camera over must not go dark for it)."""
        if fps <= 0:
            raise ValueError("analysis_fps must be positive")
        self.analysis_fps = float(fps)

    def _run(self) -> None:
        """The thread: connect, stream, and after every failure back off and reconnect, until stopped."""
        try:
            for attempt in self._retrying:
                with attempt:
                    self._connect_once(attempt)
        except BaseException as exc:  # pragma: no cover - a bug here must still leave a trace
            log.exception("camera %s: ingest thread failed", self.camera_id)
            self.last_error, self.last_error_at = describe(exc), time.time()
        finally:
            self._set_state(CameraState.STOPPED, "stopped" if self._stop.is_set() else "thread ended")

    def _connect_once(self, attempt: AttemptManager) -> None:
        """CONNECTING, then stream until stopped (returns) or a failure (recorded, then raised to retry)."""
        if self._stop.is_set():
            return
        self._attempt = attempt
        reason = "started"
        if self.failures:
            self.reconnects += 1
            self._counters.reconnects.inc()
            reason = f"reconnect {self.reconnects} after: {self.last_error}"
        self._set_state(CameraState.CONNECTING, reason)
        try:
            streamed_s = self._connection()
            if self._stop.is_set():
                return
            raise Failure("end of stream", streamed_s)
        except Exception as exc:  # noqa: BLE001 - every failure reconnects; none ends the thread
            if isinstance(exc, Stalled):
                self._set_state(CameraState.STALLED, str(exc))
            if self._stop.is_set():
                return
            self._record_failure(exc, attempt)
            raise

    def _record_failure(self, exc: Exception, attempt: AttemptManager) -> None:
        self.failures += 1
        self.last_error = str(exc) if isinstance(exc, Failure) else describe(exc)
        self.last_error_at = time.time()
        if getattr(exc, "streamed_s", 0.0) >= self.options.healthy_after_s:
            retry.connected(attempt)  # it had been healthy: the next delay is the shortest again

    def _backing_off(self, state: RetryCallState) -> None:
        """tenacity's hook before the delay: the BACKING_OFF transition, with the delay and its ceiling."""
        delay = state.next_action.sleep
        ceiling = retry.ceiling_s(state.attempt_number, self.options.backoff_base_s, self.options.backoff_cap_s)
        self._set_state(CameraState.BACKING_OFF, f"{self.last_error}; retry in {delay:.2f} s",
                        delay_s=delay, ceiling_s=ceiling)

    # -- one connection --------------------------------------------------------------------------
    def _open(self):
        import av  # imported when a camera is opened, not with the package
        from av.codec.hwaccel import HWAccel

        url = self._resolve(self.url)
        opts = self.options
        options = {"rtsp_transport": opts.rtsp_transport, "analyzeduration": str(opts.analyzeduration_us),
                   # socket I/O timeout (µs) of the rtsp/http protocols, beside PyAV's own interrupt timeout
                   "timeout": str(int(max(opts.open_timeout_s, opts.stall_timeout_s) * 1e6))}
        if not url.lower().startswith(("rtsp://", "rtsps://")):
            options.pop("rtsp_transport")
        device = choose_hwaccel(opts.hwaccel)
        hwaccel = HWAccel(device, allow_software_fallback=True) if device else None
        started = time.monotonic()
        try:
            container = av.open(url, options=options, timeout=(opts.open_timeout_s, opts.stall_timeout_s),
                                hwaccel=hwaccel)
        except av.FFmpegError as exc:
            took = time.monotonic() - started
            if took >= opts.open_timeout_s * 0.95:  # PyAV's interrupt: FFmpeg reports it as some I/O error
                raise Failure(f"open timed out after {took:.1f} s ({describe(exc)})") from None
            raise Failure(f"open failed: {describe(exc)}") from None
        self.open_s = round(time.monotonic() - started, 3)
        return container, url

    def _connection(self) -> float:
        """Open, decode and sample until stop (returns) or a failure (raises). Returns seconds streamed."""
        import av

        started = time.monotonic()
        container, url = self._open()
        conn = None
        try:
            conn = self._prepare(container, url, started)
            self._read(conn)
            return conn.streamed()
        except av.FFmpegError as exc:  # from demuxing (a decode error of a packet is handled in _decode)
            failure = conn.watch.read_failed(describe(exc)) if conn else Failure(describe(exc))
            failure.streamed_s = conn.streamed() if conn else 0.0
            raise failure from None
        except Failure as exc:
            exc.streamed_s = conn.streamed() if conn else 0.0
            raise
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass

    def _prepare(self, container, url: str, started: float) -> _Connection:
        """The video stream set up for decoding, and this connection's reading steps."""
        if not container.streams.video:
            raise Failure(f"no video stream in {redact(url)}")
        stream = container.streams.video[0]
        stream.thread_type = self.options.decoder_thread_type
        if self.options.decoder_threads:
            stream.codec_context.thread_count = self.options.decoder_threads
        rate = stream.average_rate or stream.guessed_rate
        frame_step_s = 1.0 / float(rate) if rate else 0.04
        opts = self.options
        self._idle = IdleDecode(stream.codec_context, opts.idle_max_keyframe_gap_s, wake_ratio=opts.idle_wake_ratio,
                                wake_min_bytes=opts.idle_wake_min_bytes, wake_hold_s=opts.idle_wake_hold_s)
        self._idle.wanted = self._idle_wanted
        return _Connection(
            container=container, stream=stream, live=is_live(url) or not self.options.pace_files, started=started,
            gate=KeyframeGate(stream.codec_context, self.camera_id),
            watch=StallWatch(self.options.stall_timeout_s, self.options.keyframe_timeout_s),
            timestamps=Timestamps(frame_step_s), sampler=Sampler(self.analysis_fps), pacer=Pacer(self._stop),
            idle=self._idle, capture_clock=CaptureClock())

    def _read(self, conn: _Connection) -> None:
        """Demux and decode until the stream ends or stop; every clean frame goes to :meth:`_on_frame`."""
        for packet in conn.container.demux(conn.stream):
            if self._stop.is_set():
                return
            conn.watch.packet_read(conn.gate)
            if packet.size:
                self.packets += 1
            if not conn.gate.admits_packet(packet):
                self.skipped_packets += 1
                continue
            for frame in self._decode(conn, packet):
                arrived = conn.idle.arrival_of(frame.pts)  # taken now: a frame skipped below leaves none
                self.decoded += 1
                self._counters.decoded.inc()
                if frame.is_corrupt:
                    self.corrupt += 1
                if not conn.gate.admits_frame(frame):
                    self._skip()
                    continue
                if not self._on_frame(conn, frame, arrived):
                    return

    def _decode(self, conn: _Connection, packet) -> list:
        import av

        try:
            return conn.idle.decode(packet)  # an idle door's mode, its replay when it wakes mid-GOP
        except av.FFmpegError as exc:
            self.decode_errors += 1
            if conn.gate.clean:
                raise Failure(f"decode error: {describe(exc)}") from None
            conn.gate.decode_failed()
            return []

    def _on_frame(self, conn: _Connection, frame, packet_arrived: float | None) -> bool:
        """A clean frame: timestamp it, sample it, pace it (files), hand it out. False when stopped.
        ``packet_arrived``: when its packet came (None: unknown, now stands in)."""
        arrived = conn.watch.progressed()
        if conn.streaming_since is None:
            self._streaming(conn, arrived)
        elif arrived - conn.streaming_since >= self.options.healthy_after_s:
            retry.connected(self._attempt)  # healthy: the next failure backs off from the shortest delay
        pts = conn.timestamps.repair(frame.time, arrived - conn.started)
        if pts is None:
            self.untimed += 1
            return True
        if conn.timestamps.goes_back(pts):
            self.out_of_order += 1
            return True
        captured = None  # a file's frames are captured when the pacer hands them out
        if conn.live and packet_arrived is not None:
            captured = conn.capture_clock.captured(pts, packet_arrived)
        conn.sampler.interval = 1.0 / self.analysis_fps  # set_analysis_fps may have changed it
        if not conn.sampler.due(pts, conn.timestamps.advance(pts)):
            self.not_sampled += 1
            return True
        if not conn.live:  # a file: hand frames out at the rate a camera would
            if not conn.pacer.wait_for(pts):
                return False
            conn.watch.progressed()
        self._emit(frame, pts, captured)
        return True

    def _streaming(self, conn: _Connection, since: float) -> None:
        """The first clean frame of a connection: STREAMING."""
        conn.streaming_since = since
        self.first_frame_s = round(since - conn.started, 3)
        # the device when the decoder really runs on it (it may fall back to software)
        self.hwaccel = choose_hwaccel(self.options.hwaccel) if conn.stream.codec_context.is_hwaccel else None
        self._set_state(CameraState.STREAMING,
                        f"first clean keyframe {self.first_frame_s:.2f} s after connecting "
                        f"(open {self.open_s:.2f} s, {self.hwaccel or 'software'} decoding)")

    def _skip(self) -> None:
        self.skipped += 1
        self._counters.skipped.inc()

    def _emit(self, frame, pts: float, captured: float | None = None) -> None:
        """Hand a frame out, stamped ``captured`` (wall clock; None: now)."""
        self.resolution = (frame.width, frame.height)
        captured = time.time() if captured is None else captured
        self.last_frame_at = captured
        if self._stop.is_set():
            return  # a restarted camera's successor owns the buffer now
        # Converted to BGR only if a stage takes it (a shed frame never is); a hardware decoder's picture
        # is converted now, as its surfaces come from a small pool the decoder needs back.
        if self.hwaccel is not None:
            analysed = Frame(self.camera_id, self._seq, float(pts), captured, frame.to_ndarray(format="bgr24"))
        else:
            analysed = Frame(self.camera_id, self._seq, float(pts), captured, decoded=frame)
        self.buffer.put(analysed)
        self._seq += 1
        self.analysed += 1
        self._counters.analysed.inc()
        dropped = self.buffer.dropped
        if dropped != self._dropped_seen:
            self._counters.dropped.inc(max(0, dropped - self._dropped_seen))
            self._dropped_seen = dropped
