"""A camera's connection test and live snapshot (admin): the URL opened with PyAV in a worker thread, under
a short timeout, and its first clean keyframe decoded. Nothing is kept: the snapshot is one JPEG answered
to the admin who asked, never written anywhere.

``embedded:<mount>`` URLs go to the running embedded stack's RTSP server, as the processors resolve them
(infra/foundation/camera_urls.py, shared with the processors' ingest). A URL that reads this machine's
files (``file://``) is refused unless ``dashboard.allow_file_cameras``: a test or snapshot would show an
admin any video file the dashboard may read. At most ``MAX_PROBES`` run at once: each holds a thread (a
blocking PyAV read cannot be interrupted) for up to its timeout.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass

from dashboard.services import Problem
from infra.foundation.camera_urls import reads_local_files, redact, resolve_camera_url

PROBE_TIMEOUT_S = 6.0
MAX_PROBES = 2
MAX_PACKETS = 600  # a stream that gives no clean keyframe in this many packets is reported as such
_probes = asyncio.Semaphore(MAX_PROBES)


class ProbeFailed(Exception):
    """The camera could not be opened or gave no picture: the message says why in one line."""


@dataclass(frozen=True)
class Picture:
    codec: str
    width: int
    height: int
    fps: float | None
    jpeg: bytes

    def summary(self) -> str:
        rate = f" at {self.fps:g} fps" if self.fps else ""
        return f"ok: {self.codec} {self.width}x{self.height}{rate}"


def check_local_files(url: str, allowed: bool) -> None:
    """A 400 for a ``file://`` URL (or any other that reads this machine's files) unless ``allowed``."""
    if not allowed and reads_local_files(url):
        raise Problem(f"url {redact(url)[:120]!r}: camera URLs that read this machine's files are refused "
                      "(dashboard.allow_file_cameras allows them)")


def _resolved(url: str) -> str:
    try:
        return resolve_camera_url(url)
    except RuntimeError as exc:  # the embedded RTSP server is not running
        raise ProbeFailed(str(exc)) from None


async def grab(url: str, *, allow_files: bool, timeout_s: float = PROBE_TIMEOUT_S) -> Picture:
    """The camera's first clean picture as JPEG, with its codec, size and frame rate; ProbeFailed if none,
    a 400 for a URL that reads local files unless ``allow_files``."""
    check_local_files(url, allow_files)
    if _probes.locked():
        raise ProbeFailed(f"{MAX_PROBES} camera tests are running already: try again in a few seconds")
    async with _probes:
        return await asyncio.to_thread(_grab, _resolved(url), timeout_s)


def _grab(url: str, timeout_s: float) -> Picture:
    import av

    options = {"rtsp_transport": "tcp"} if url.lower().startswith(("rtsp://", "rtsps://")) else {}
    deadline = time.monotonic() + timeout_s
    try:
        with av.open(url, options=options, timeout=(timeout_s, timeout_s)) as container:
            if not container.streams.video:
                raise ProbeFailed("the stream has no video")
            stream = container.streams.video[0]
            for count, packet in enumerate(container.demux(stream)):
                if time.monotonic() > deadline or count > MAX_PACKETS:
                    raise ProbeFailed(f"no clean keyframe within {timeout_s:g} s")
                for frame in packet.decode():
                    if frame.key_frame and not getattr(frame, "corrupt", False):
                        return _picture(stream, frame)
    except av.FFmpegError as exc:
        raise ProbeFailed(redact(f"{type(exc).__name__}: {exc}".strip())[:300]) from None
    raise ProbeFailed("the stream ended before a picture")


def _picture(stream, frame) -> Picture:
    buffer = io.BytesIO()
    frame.to_image().save(buffer, format="JPEG", quality=85)
    rate = stream.average_rate or stream.guessed_rate
    return Picture(codec=stream.codec_context.name, width=frame.width, height=frame.height,
                   fps=round(float(rate), 2) if rate else None, jpeg=buffer.getvalue())
