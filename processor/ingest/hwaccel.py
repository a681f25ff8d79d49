"""Hardware decoding: which FFmpeg device type (cuda, vaapi) decodes H.264 on this machine, probed once per
process by decoding a two-frame clip made here."""

from __future__ import annotations

import io
import logging
import threading

log = logging.getLogger("rollcall.ingest")

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
