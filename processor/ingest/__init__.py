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
backoff with full jitter (``uniform(0, min(cap, base * 2**(attempt - 1)))``, base 0.5 s, cap 30 s: the
project's reconnect policy, ``infra.foundation.retry``); the attempt count starts again once a connection
has streamed for ``healthy_after_s``. A blocking PyAV read cannot be interrupted from another thread, so
every open and read runs under ``av.open``'s ``timeout=(open, read)``: ``stop()`` and stall detection take
effect within those bounds.

After every (re)connect frames are discarded until a keyframe decodes clean: a client that joins a
shared RTSP media while a keyframe is on the wire gets a corrupt picture and wrong-looking P-frames
with no error. A corrupt frame later on flushes the decoder and waits for the next keyframe as well.

:class:`IngestManager` holds the sources by camera id and follows configuration changes (``sync``)
without touching unchanged cameras. Counters are available as a plain dict (``stats()``) and as
Prometheus metrics with a ``camera`` label (the ``rollcall_camera_*`` series of ``metrics``).

The package: :mod:`~processor.ingest.camera` (a camera's thread and state machine),
:mod:`~processor.ingest.stream` (the steps of reading one connection: keyframe resync, stall detection,
timestamp repair, sampling, pacing), :mod:`~processor.ingest.manager`, :mod:`~processor.ingest.options`
(states, options), :mod:`~processor.ingest.metrics`, :mod:`~processor.ingest.hwaccel`,
:mod:`~infra.foundation.camera_urls`.
"""

from infra.foundation.camera_urls import redact, resolve_camera_url
from processor.ingest.camera import CameraSource
from processor.ingest.hwaccel import choose_hwaccel
from processor.ingest.manager import IngestManager
from processor.ingest.options import CameraState, IngestOptions, Transition

__all__ = [
    "CameraSource", "CameraState", "IngestManager", "IngestOptions", "Transition",
    "choose_hwaccel", "redact", "resolve_camera_url",
]
