"""Camera URLs: ``embedded:<mount>`` resolved to the embedded stack's RTSP server, live or file, and
credentials kept out of logs and stats. At the bottom layer: the processors' ingest and the dashboard's
connection test, snapshot and live video resolve and redact them alike."""

from __future__ import annotations

import re

from infra.foundation.embedded import current_state


def resolve_camera_url(url: str) -> str:
    """``embedded:<mount>`` -> the running embedded stack's RTSP URL; anything else unchanged."""
    if not url.startswith("embedded:"):
        return url
    state = current_state()
    if state is None or not state.is_running("rtsp"):
        raise RuntimeError(f"camera url {url}: the embedded RTSP server is not running (run `rollcall up`)")
    return state.rtsp_url(url.removeprefix("embedded:"))


_LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def is_live(url: str) -> bool:
    """A network stream (read as it comes), not a file (read at its own frame rate)."""
    return url.lower().startswith(_LIVE_SCHEMES)


def reads_local_files(url: str) -> bool:
    """Whether opening ``url`` reads this machine's files: ``file://``, a bare path, or any other FFmpeg
    protocol that is neither a network stream nor the embedded RTSP server (``concat:``, ``subfile:``...)."""
    return not (is_live(url) or url.startswith("embedded:"))


_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"]*@")


def redact(text: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://***@cam/stream``: logs and stats never carry passwords."""
    return _CREDENTIALS.sub(r"\1***@", text)


def describe(exc: BaseException) -> str:
    """An exception as one short line without credentials, for logs, stats and state reasons."""
    text = str(exc).strip() or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}")[:300]
