"""The processor: sources → batcher → stages → event publisher, wired with bounded queues.

    IngestManager (a decoder thread per camera, drop-oldest FrameBuffers)
        → Batcher (door cameras; max batch / max wait)          ─ queue ─
        → FaceStage (processor/stages/door_faces.py: detect → align → quality gate, batched, in a worker
                     thread)  ─ queue ─
        → RecognitionStage (per-camera face tracks → embed the faces of undecided tracks, batched →
                            gallery match → recognition events)

The two stages run in parallel (detection of the next batch while this one is embedded).
        → EventPublisher (bounded outgoing buffer, never blocks the frames)

Per-camera state (face trackers) lives in the recognition stage, keyed by camera, even though
inference is batched across cameras. Nothing is shared between stages but the queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from infra.foundation.config import CameraConfig
from processor import metrics
from processor.frames import Frame
from processor.scheduler import EXTRAS_SKIPPED, OWED, Scheduler
from processor.stages.door_faces import FaceBatchResult
from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult, TrackDecision, measure_liveness
from processor.stages.liveness import LivenessSettings
from schemas.events import box_object, build_event, recognition_event

log = logging.getLogger("rollcall.processor")


@dataclass
class RecognitionStage:
    """Per-camera face tracks → embeddings for undecided tracks (one batched call across cameras) →
    one decision per track → a recognition event on Kafka."""

    embedder: object  # FaceEmbedder
    cameras: dict[str, CameraConfig]
    doors_by_camera: dict[str, str]
    gallery: Callable[[], object]  # returns the current Gallery
    publish: Callable[[str, str, dict], bool]  # (topic, key, event) -> accepted
    topic: str
    model_pack: str
    fps_of: Callable[[str], float]
    review: Callable[[TrackDecision, dict], None] | None = None
    overlay_topic: str | None = None  # each analysed frame's face tracks, for live displays
    trackers: dict[str, FaceTracker] = field(default_factory=dict)
    frame_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # last seen, per camera
    # recent capture-to-event latencies, bounded (the histogram metric keeps the long view)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    faces_embedded: int = 0  # faces embedded (the rest were gated out or on tracks already decided)
    refinements_skipped: int = 0  # embeddings that would only have refined a track's answer, skipped for rooms
    scheduler: Scheduler | None = None  # the inference gate, door activity, extras for cameras not behind
    on_analysed: Callable[[str, float, float], None] | None = None  # (camera, capture time, stream time)
    on_activity: Callable[[str, bool], None] | None = None  # (camera, a face in view): keyframe-only decoding when idle
    # an unknown track this similar to a decision the door made just before is a fragment of it, not a
    # second person (the gallery's match threshold; None: never dropped)
    fragment_similarity: float | None = None
    # a track whose mean matches nobody better than this, once it has its looks (FaceTracker.has_looks), is a
    # clear stranger: only its clearly better faces are embedded (None: every embed_every-th too)
    stranger_below: float | None = None
    # a track whose mean matches an enrolled person this well (margin met) is clearly known; a clear answer
    # either way needs only its first clear_after embeddings (None: decide_after, as any other)
    known_above: float | None = None
    clear_after: int | None = None
    liveness: LivenessSettings | None = None  # the liveness check of door face tracks (None: off)
    face_gone_s: float | None = 0.4  # a known, live track whose face is gone this long is decided (None: off)

    def _tracker(self, camera_id: str) -> FaceTracker:
        tracker = self.trackers.get(camera_id)
        if tracker is None:
            tracker = self.trackers[camera_id] = FaceTracker(camera_id=camera_id, fps=self.fps_of(camera_id),
                                                             fragment_similarity=self.fragment_similarity,
                                                             stranger_below=self.stranger_below,
                                                             known_above=self.known_above,
                                                             clear_after=self.clear_after,
                                                             liveness=self.liveness,
                                                             gone_after_s=self.face_gone_s)
        return tracker

    def _match(self, embedding: np.ndarray) -> MatchResult:
        gallery = self.gallery()
        if gallery is None or len(gallery) == 0:
            return MatchResult(None, 0.0, 0.0)
        best = gallery.match(embedding[None, :])[0]
        return MatchResult(best.person_id, float(best.score), float(best.margin))

    async def handle(self, results: list[FaceBatchResult]) -> None:
        assigned = []
        crops: list[np.ndarray] = []
        wanting: list[FaceObservation] = []
        # faces whose liveness cues this frame feeds, with the frame's faces (a neighbour is not a picture's edge)
        measuring: list[tuple[np.ndarray, FaceObservation, list[FaceObservation]]] = []
        # embeddings that only refine a track's answer wait for better times while room tracking is starved
        refine = self.scheduler is None or not self.scheduler.rooms_starved()
        for result in results:
            tracker = self._tracker(result.frame.camera_id)
            pairs = tracker.assign(result.faces)
            for key, face in pairs:
                if tracker.wants_embedding(key, face):
                    if refine or not tracker.refining(key):
                        crops.append(face.crop)
                        wanting.append(face)
                    else:
                        self.refinements_skipped += 1
                        EXTRAS_SKIPPED.labels(result.frame.camera_id, "refining_embeddings").inc()
                if tracker.wants_liveness(key):
                    measuring.append((result.frame.image, face, result.faces))
            assigned.append((result.frame, tracker, pairs))
        # the liveness cues (1-4 ms a face) in a worker thread beside the embedding, not on the event loop;
        # the tracks only sum them in settle
        work = [self._embed(crops, wanting)] if crops else []
        if measuring:
            work.append(asyncio.to_thread(measure_liveness, measuring))
        await asyncio.gather(*work)
        for result, (frame, tracker, pairs) in zip(results, assigned):
            if self.on_analysed is not None:
                self.on_analysed(frame.camera_id, frame.captured_at, frame.pts_s)
            height, width = frame.image.shape[:2]
            self.frame_sizes[frame.camera_id] = (width, height)
            for decision in tracker.settle(pairs, pts_s=frame.pts_s, captured_at=frame.captured_at,
                                           frame_size=(width, height), match=self._match, image=frame.image):
                self.emit(decision)
            # a face in view (detected, or on a track still open): the camera decodes every frame again.
            # The rate recognition needs is owed only while a track is undecided: once every face in view
            # is decided, the door's frames can only show a new arrival, which the idle rate notices (a face
            # not on a confirmed track yet is a new arrival too)
            active = bool(result.faces) or tracker.open_tracks > 0
            if self.scheduler is not None:
                undecided = tracker.undecided_tracks > 0 or len(pairs) < len(result.faces)
                self.scheduler.set_active(frame.camera_id, undecided)
            if self.on_activity is not None:
                self.on_activity(frame.camera_id, active)
            if self.overlay_topic is not None and self._extras_allowed(frame.camera_id):
                self._overlay(frame, tracker, pairs, (width, height))

    async def _embed(self, crops: list[np.ndarray], faces: list[FaceObservation]) -> None:
        async with self._turn():
            started = time.perf_counter()
            embeddings = await asyncio.to_thread(self.embedder.embed, crops)
            metrics.STAGE_SECONDS.labels("embed").observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels("embed").observe(len(crops))
        for face, embedding in zip(faces, embeddings):
            face.embedding = embedding
        self.faces_embedded += len(crops)

    def _turn(self):
        """Embeddings are asked only for undecided tracks, and finish frames already detected: owed, and
        first among the owed (processor/scheduler.py)."""
        if self.scheduler is None:
            return contextlib.nullcontext()
        return self.scheduler.gate.turn(OWED, first=True)

    def _extras_allowed(self, camera_id: str) -> bool:
        return self.scheduler is None or self.scheduler.extras_allowed(camera_id, "overlays")

    def _overlay(self, frame: Frame, tracker: FaceTracker, pairs, frame_size: tuple[int, int]) -> None:

        camera = self.cameras.get(frame.camera_id)
        objects = [{"track_id": track_id, "kind": "face", "box": box_object(face.box),
                    "label": person_id or ("unknown" if decided else "…"), "person_id": person_id}
                   for track_id, face, person_id, decided in tracker.labels(pairs)]
        self.publish(self.overlay_topic, frame.camera_id, build_event("overlay", {
            "camera_id": frame.camera_id, "room_id": camera.room if camera else "unknown", "role": "door",
            "frame_time": frame.captured_at, "pts_s": frame.pts_s, "frame_size": frame_size, "objects": objects}),
            best_effort=True)

    def flush(self) -> None:
        for camera_id in list(self.trackers):
            self.release(camera_id, forget=False)

    def release(self, camera_id: str, *, forget: bool = True) -> None:
        """Decide the camera's open face tracks now (recognition events) and, with ``forget``, drop its
        tracker (the camera stopped here)."""
        tracker = self.trackers.get(camera_id)
        if tracker is None:
            return
        for decision in tracker.flush(self.frame_sizes.get(camera_id, (1, 1)), self._match):
            self.emit(decision)
        if forget:
            del self.trackers[camera_id]
            self.frame_sizes.pop(camera_id, None)

    def emit(self, decision: TrackDecision) -> None:

        camera = self.cameras.get(decision.camera_id)
        event = recognition_event(
            camera_id=decision.camera_id,
            room_id=camera.room if camera else "unknown",
            door_id=self.doors_by_camera.get(decision.camera_id),
            track_id=decision.track_id,
            person_id=decision.person_id,
            score=decision.score,
            margin=decision.margin,
            quality=decision.quality,
            box=decision.box,
            frame_size=decision.frame_size,
            frames=decision.frames,
            frame_time=_stream_to_wall(decision, decision.best_pts_s),
            first_seen=_stream_to_wall(decision, decision.first_pts_s),
            last_seen=_stream_to_wall(decision, decision.last_pts_s),
            model_pack=self.model_pack,
            # for the door-to-room handoff: the clothing below the best face, and the side it was on
            appearance=decision.appearance.to_event() if decision.appearance is not None else None,
            side=decision.side,
            liveness=_liveness_field(decision),
        )
        self.publish(self.topic, decision.camera_id, event)
        latency = time.time() - decision.captured_at
        self.latencies_s.append(latency)
        metrics.EVENT_LATENCY.labels("recognition").observe(latency)
        metrics.RECOGNITIONS.labels(decision.camera_id, "known" if decision.person_id else "unknown").inc()
        if decision.person_id is None and self.review is not None:  # unknown, or a suspected spoof
            self.review(decision, event)
        log.info("recognition %s on %s: %s (score %.3f, margin %.3f, %d frames)%s", decision.track_id,
                 decision.camera_id, decision.person_id or "unknown", decision.score, decision.margin,
                 decision.frames, _liveness_note(decision))

    async def run(self, inbox: asyncio.Queue) -> None:
        while True:
            await self.handle(await inbox.get())


def _liveness_field(decision: TrackDecision) -> dict | None:
    if decision.liveness is None:
        return None
    return {**decision.liveness.to_event(), "pictured_person_id": decision.pictured_person_id}


def _liveness_note(decision: TrackDecision) -> str:
    if decision.liveness is None:
        return ""
    note = f", liveness {decision.liveness.decision} {decision.liveness.score:.2f} {decision.liveness.cues}"
    if decision.pictured_person_id is not None:
        note += f": a picture of {decision.pictured_person_id}, no identity given"
    return note


def _stream_to_wall(decision: TrackDecision, pts_s: float) -> float:
    # The deciding frame's wall-clock capture time, shifted by the stream-time difference.
    return decision.captured_at - (decision.last_pts_s - pts_s)
