"""A camera's connection test and live snapshot (admin): the URL opened with PyAV in a worker thread, under
a short timeout, and its first clean keyframe decoded. Nothing is kept: the snapshot is one JPEG answered
to the admin who asked, never written anywhere.

``embedded:<mount>`` URLs go to the running embedded stack's RTSP server, as the processors resolve them.
At most ``MAX_PROBES`` run at once: each holds a thread (a blocking PyAV read cannot be interrupted) for
up to its timeout.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass

from infra.foundation.embedded import current_state

PROBE_TIMEOUT_S = 6.0
MAX_PROBES = 2
MAX_PACKETS = 600  # a stream that gives no clean keyframe in this many packets is reported as such
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"]*@")
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


def redact(text: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://***@cam/stream``: messages never carry passwords."""
    return _CREDENTIALS.sub(r"\1***@", text)


def resolve(url: str) -> str:
    if not url.startswith("embedded:"):
        return url
    state = current_state()
    if state is None or not state.is_running("rtsp"):
        raise ProbeFailed(f"{url}: the embedded RTSP server is not running (rollcall up)")
    return state.rtsp_url(url.removeprefix("embedded:"))


async def grab(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> Picture:
    """The camera's first clean picture as JPEG, with its codec, size and frame rate; ProbeFailed if none."""
    if _probes.locked():
        raise ProbeFailed(f"{MAX_PROBES} camera tests are running already: try again in a few seconds")
    async with _probes:
        return await asyncio.to_thread(_grab, resolve(url), timeout_s)


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
