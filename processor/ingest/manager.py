"""The cameras' sources by id (:class:`IngestManager`), following configuration changes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable, Iterable, Protocol

from infra.foundation.camera_urls import resolve_camera_url
from processor.frames import FrameBuffer
from processor.ingest import metrics
from processor.ingest.camera import CameraSource
from processor.ingest.options import IngestOptions

log = logging.getLogger("rollcall.ingest")


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
        """Start new cameras, stop removed or disabled ones, restart those whose url changed; a camera whose
        analysis_fps changed goes on at the new rate without reconnecting ("rerated").

        Call it on the event loop (the buffers are bound to the running loop). Unchanged cameras are
        not touched: same source object, same thread. Never blocks: stopped sources end on their own.
        """
        loop = self._loop or asyncio.get_running_loop()
        resolve = resolve_url or resolve_camera_url
        wanted: dict[str, CameraLike] = {}
        for camera in cameras:
            if getattr(camera, "enabled", True):
                wanted[camera.id] = camera
        result: dict[str, list[str]] = {"added": [], "removed": [], "restarted": [], "rerated": [], "unchanged": []}
        for camera_id in [cid for cid in self._sources if cid not in wanted]:
            source = self._sources.pop(camera_id)
            source._retire()
            self._retiring.append(source)
            metrics.forget(camera_id)
            result["removed"].append(camera_id)
            log.info("camera %s: no longer run here (removed, disabled or moved to another processor)", camera_id)
        for camera_id, camera in wanted.items():
            fps = float(getattr(camera, "analysis_fps", 5.0))
            current = self._sources.get(camera_id)
            if current is not None and current.url == camera.url:
                current._resolve = resolve  # used from its next connect on
                rerated = current.analysis_fps != fps
                if rerated:
                    current.set_analysis_fps(fps)
                    log.info("camera %s: analysed at %g fps from now on", camera_id, fps)
                result["rerated" if rerated else "unchanged"].append(camera_id)
                continue
            buffer, first_seq = None, 0
            if current is not None:
                current._retire()
                self._retiring.append(current)
                buffer, first_seq = current.buffer, current.next_seq  # the batcher keeps its buffer
                log.info("camera %s: its url changed; restarting", camera_id)
            if buffer is None:
                buffer = self._new_buffer(camera, fps, loop)
            source = CameraSource(camera_id, camera.url, fps, buffer=buffer, options=self.options,
                                  resolve_url=resolve, first_seq=first_seq)
            self._sources[camera_id] = source
            source.start()
            result["restarted" if current is not None else "added"].append(camera_id)
        self._retiring = [s for s in self._retiring if s.alive]
        return result

    def _new_buffer(self, camera: CameraLike, fps: float, loop: asyncio.AbstractEventLoop) -> FrameBuffer:
        """A door camera keeps its latest frames; a room camera keeps frames spread over ``room_buffer_s``."""
        if getattr(camera, "role", None) == "room":
            span = self.options.room_buffer_s
            capacity = max(self.options.buffer_capacity, int(math.ceil(min(fps, 2.0) * span)))
            return FrameBuffer(camera.id, capacity, loop, span_s=span)
        return FrameBuffer(camera.id, self.options.buffer_capacity, loop)

    def source(self, camera_id: str) -> CameraSource:
        return self._sources[camera_id]

    def sources(self) -> dict[str, CameraSource]:
        return dict(self._sources)

    def set_idle(self, camera_id: str, idle: bool) -> None:
        """A door camera with nobody in view decodes keyframes only (CameraSource.set_idle)."""
        source = self._sources.get(camera_id)
        if source is not None:
            source.set_idle(idle)

    def keyframe_rate(self, camera_id: str) -> float | None:
        """Frames a second a camera decoding keyframes only delivers; None when it decodes every frame."""
        source = self._sources.get(camera_id)
        if source is None or not source.keyframes_only or not source.keyframe_gap_s:
            return None
        return 1.0 / source.keyframe_gap_s

    def buffers(self) -> dict[str, FrameBuffer]:
        return {camera_id: source.buffer for camera_id, source in self._sources.items()}

    def waiting(self, camera_id: str) -> int:
        """Frames waiting in the camera's current buffer (0: no such camera); safe from a worker thread."""
        source = self._sources.get(camera_id)
        return len(source.buffer) if source is not None else 0

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
            metrics.forget(camera_id)
        self._sources.clear()
        self._retiring = [s for s in self._retiring if s.alive]
        return left
