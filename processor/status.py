"""The processor's status on Kafka (schemas/processor_status.v1.json): which cameras it runs and how
their analysis went since the last status, every ``[group] status_every_s``.

The stages report each analysed frame to an :class:`AnalysisLog` (a callback, no shared state beyond
it); :class:`StatusReporter` turns the log into one event per period. Together the members' statuses
say who runs what and the longest time any camera went unanalysed, across a failover too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from schemas.events import build_event, utc_timestamp


def processor_id() -> str:
    """host-pid-random: unique per process, readable in logs and group listings."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Period:
    frames: int = 0
    first: float | None = None
    last: float | None = None
    max_gap_s: float = 0.0


class AnalysisLog:
    """Per camera: the frames analysed in the current period, and the last one before it."""

    def __init__(self):
        self._periods: dict[str, _Period] = {}
        self._last: dict[str, float] = {}  # camera -> capture time of its last analysed frame, ever
        self.epochs: dict[str, float] = {}  # camera -> capture time less stream time of its first frame

    def analysed(self, camera_id: str, captured_at: float, pts_s: float) -> None:
        period = self._periods.setdefault(camera_id, _Period())
        previous = self._last.get(camera_id)
        if previous is not None and captured_at > previous:
            period.max_gap_s = max(period.max_gap_s, captured_at - previous)
        self._last[camera_id] = max(captured_at, previous or captured_at)
        period.frames += 1
        period.first = captured_at if period.first is None else period.first
        period.last = captured_at
        self.epochs.setdefault(camera_id, captured_at - pts_s)

    def forget(self, camera_id: str) -> None:
        """The camera stopped here: a later return starts afresh (its gap is another member's business)."""
        self._last.pop(camera_id, None)
        self.epochs.pop(camera_id, None)

    def take(self) -> dict[str, _Period]:
        periods, self._periods = self._periods, {}
        return periods


class StatusReporter:
    """Publishes a processor_status event every ``every_s`` (and a last one when stopped)."""

    def __init__(self, publish: Callable[..., bool], topic: str, log: AnalysisLog, *, processor: str,
                 group: str | None, running: Callable[[], dict[str, str]], slots: Callable[[], list[int]],
                 generation: Callable[[], int], every_s: float):
        self.publish = publish
        self.topic = topic
        self.log = log
        self.processor = processor
        self.group = group
        self.running = running  # camera id -> role, of the cameras it runs now
        self.slots = slots
        self.generation = generation
        self.every_s = every_s
        self.started_at = time.time()
        self._reported: set[str] = set()  # running at the last report
        self._roles: dict[str, str] = {}  # every camera it ever ran -> its role
        self.sent = 0

    def report(self) -> dict:
        running = self.running()
        self._roles.update(running)
        periods = self.log.take()
        cameras = []
        for camera_id in sorted(set(running) | set(periods) | self._reported):
            period = periods.get(camera_id, _Period())
            is_running = camera_id in running
            cameras.append({
                "camera_id": camera_id, "role": self._roles.get(camera_id, "door"), "running": is_running, "frames": period.frames,
                "first_frame_time": utc_timestamp(period.first) if period.first is not None else None,
                "last_frame_time": utc_timestamp(period.last) if period.last is not None else None,
                "max_gap_s": round(period.max_gap_s, 3), "stream_epoch": self.log.epochs.get(camera_id)})
        self._reported = set(running)
        event = build_event("processor_status", {
            "processor_id": self.processor, "group": self.group, "slots": self.slots(),
            "generation": self.generation(), "started_at": self.started_at, "cameras": cameras})
        self.publish(self.topic, self.processor, event)
        self.sent += 1
        return event

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.every_s)
                self.report()
        finally:
            self.report()  # what the last period saw, and that nothing runs here any more
