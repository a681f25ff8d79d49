"""The cameras' Prometheus series (``rollcall_camera_*``, label ``camera``): counters that follow each
:class:`~processor.ingest.camera.CameraSource`'s own, and a gauge of its current state."""

from __future__ import annotations

from dataclasses import dataclass

from infra.foundation.metrics import Counter, Gauge, get_or_create
from processor.ingest.options import CameraState

FRAMES_DECODED = get_or_create(Counter, "rollcall_camera_frames_decoded_total",
                               "Frames the camera's decoder produced", labelnames=["camera"])
FRAMES_ANALYSED = get_or_create(Counter, "rollcall_camera_frames_analysed_total",
                                "Frames sampled at analysis_fps and put into the camera's buffer", labelnames=["camera"])
FRAMES_DROPPED = get_or_create(Counter, "rollcall_camera_frames_dropped_total",
                               "Sampled frames pushed out of the camera's buffer unanalysed (drop-oldest)",
                               labelnames=["camera"])
FRAMES_SKIPPED = get_or_create(Counter, "rollcall_camera_frames_skipped_total",
                               "Decoded frames discarded until a keyframe decodes clean (corrupt or partial)",
                               labelnames=["camera"])
RECONNECTS = get_or_create(Counter, "rollcall_camera_reconnects_total",
                           "Connection attempts after a failure", labelnames=["camera"])
STATE = get_or_create(Gauge, "rollcall_camera_state", "1 for the camera's current ingest state, 0 for the others",
                      labelnames=["camera", "state"])

_COUNTERS = (FRAMES_DECODED, FRAMES_ANALYSED, FRAMES_DROPPED, FRAMES_SKIPPED, RECONNECTS)


@dataclass(frozen=True)
class CameraCounters:
    """One camera's counter series."""

    decoded: Counter
    analysed: Counter
    dropped: Counter
    skipped: Counter
    reconnects: Counter

    @classmethod
    def of(cls, camera_id: str) -> "CameraCounters":
        return cls(*(counter.labels(camera_id) for counter in _COUNTERS))


def show_state(camera_id: str, current: CameraState) -> None:
    """The state gauge: 1 for ``current``, 0 for every other state."""
    for state in CameraState:
        STATE.labels(camera_id, state.value).set(1 if state is current else 0)


def forget(camera_id: str) -> None:
    """Remove the camera's series (removed from the configuration, or ingest stopped)."""
    for metric in _COUNTERS:
        try:
            metric.remove(camera_id)
        except KeyError:
            pass
    for state in CameraState:
        try:
            STATE.remove(camera_id, state.value)
        except KeyError:
            pass
