"""The processor: sources → batcher → stages → event publisher, wired with bounded queues.

    IngestManager (a decoder thread per camera, drop-oldest FrameBuffers)
        → Batcher (door cameras; max batch / max wait)          ─ queue ─
        → FaceStage (detect → align → quality gate, batched, in a worker thread)  ─ queue ─
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

from infra.foundation.config import CameraConfig, Config
from processor import metrics
from processor.batcher import Batcher, DemandQueue
from processor.frames import Frame
from processor.gallery import GalleryWatcher
from processor.ingest import IngestManager
from processor.publisher import EventPublisher
from processor.review import ReviewQueue
from processor.scheduler import InferenceGate, Scheduler
from processor.stages.base import BatchStage
from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult, TrackDecision
from processor.stages.faces import FaceAnalyzer, FaceDetector, FaceEmbedder, align, assess
from processor.stages.persons import PersonDetector
from processor.stages.recognition_feed import RecognitionFeed
from processor.stages.room import PersonStage, RoomStage
from schemas.events import box_object, build_event, recognition_event

log = logging.getLogger("rollcall.processor")


@dataclass
class FaceBatchResult:
    frame: Frame
    faces: list[FaceObservation]


class FaceStage(BatchStage):
    """Door cameras: one detector call per batch of frames, then alignment and the quality gate."""

    name = "faces"

    def __init__(self, detector, thresholds):
        self.detector = detector
        self.thresholds = thresholds
        self.gate_reasons: dict[str, int] = {}

    def process(self, batch: list[Frame], extras_for: frozenset[str] | None = None) -> list[FaceBatchResult]:

        detections = self.detector.detect([frame.image for frame in batch])
        results: list[FaceBatchResult] = []
        for frame, faces in zip(batch, detections):
            observations = []
            for detection in faces:
                crop = align(frame.image, detection.landmarks)
                quality = assess(frame.image, detection, crop, self.thresholds)
                outcome = quality.reason or "accepted"
                self.gate_reasons[outcome] = self.gate_reasons.get(outcome, 0) + 1
                metrics.FACES.labels(frame.camera_id, outcome).inc()
                accepted = quality.reason is None
                observations.append(FaceObservation(
                    box=tuple(float(v) for v in detection.box), score=float(detection.score),
                    quality=float(quality.score) if accepted else 0.0, embedding=None,
                    crop=crop if accepted else None))
            results.append(FaceBatchResult(frame, observations))
        return results


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
    scheduler: Scheduler | None = None  # the inference gate, door activity, extras for cameras not behind

    def _tracker(self, camera_id: str) -> FaceTracker:
        tracker = self.trackers.get(camera_id)
        if tracker is None:
            tracker = self.trackers[camera_id] = FaceTracker(camera_id=camera_id, fps=self.fps_of(camera_id))
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
        for result in results:
            tracker = self._tracker(result.frame.camera_id)
            pairs = tracker.assign(result.faces)
            for key, face in pairs:
                if tracker.wants_embedding(key, face):
                    crops.append(face.crop)
                    wanting.append(face)
            assigned.append((result.frame, tracker, pairs))
        if crops:
            async with self._turn([r.frame.camera_id for r in results]):
                started = time.perf_counter()
                embeddings = await asyncio.to_thread(self.embedder.embed, crops)
                metrics.STAGE_SECONDS.labels("embed").observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.labels("embed").observe(len(crops))
            for face, embedding in zip(wanting, embeddings):
                face.embedding = embedding
            self.faces_embedded += len(crops)
        for frame, tracker, pairs in assigned:
            height, width = frame.image.shape[:2]
            self.frame_sizes[frame.camera_id] = (width, height)
            for decision in tracker.settle(pairs, pts_s=frame.pts_s, captured_at=frame.captured_at,
                                           frame_size=(width, height), match=self._match, image=frame.image):
                self.emit(decision)
            if self.scheduler is not None:
                # a face in view: the door is owed the rate recognition needs, not just the idle rate
                self.scheduler.set_active(frame.camera_id, tracker.open_tracks > 0)
            if self.overlay_topic is not None and self._extras_allowed(frame.camera_id):
                self._overlay(frame, tracker, pairs, (width, height))

    def _turn(self, cameras: list[str]):
        if self.scheduler is None:
            return contextlib.nullcontext()
        return self.scheduler.gate.turn(lambda: self.scheduler.priority(cameras))

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
        for camera_id, tracker in self.trackers.items():
            for decision in tracker.flush(self.frame_sizes.get(camera_id, (1, 1)), self._match):
                self.emit(decision)

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
        )
        self.publish(self.topic, decision.camera_id, event)
        latency = time.time() - decision.captured_at
        self.latencies_s.append(latency)
        metrics.EVENT_LATENCY.labels("recognition").observe(latency)
        metrics.RECOGNITIONS.labels(decision.camera_id, "known" if decision.person_id else "unknown").inc()
        if decision.person_id is None and self.review is not None:
            self.review(decision, event)
        log.info("recognition %s on %s: %s (score %.3f, margin %.3f, %d frames)", decision.track_id,
                 decision.camera_id, decision.person_id or "unknown", decision.score, decision.margin,
                 decision.frames)

    async def run(self, inbox: asyncio.Queue) -> None:
        while True:
            await self.handle(await inbox.get())


def _stream_to_wall(decision: TrackDecision, pts_s: float) -> float:
    # The deciding frame's wall-clock capture time, shifted by the stream-time difference.
    return decision.captured_at - (decision.last_pts_s - pts_s)


class Processor:
    """Runs the door-camera face pipeline for the configured cameras until stopped."""

    def __init__(self, config: Config, *, database_url: str,
                 kafka_bootstrap_servers: str, metrics_port: int | None = None,
                 max_batch: int = 8, max_wait_s: float = 0.02):
        self.config = config
        self.database_url = database_url
        self.kafka_bootstrap_servers = kafka_bootstrap_servers
        self.metrics_port = metrics_port
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.ingest = None
        self.publisher = None
        self.gallery_watcher = None
        self.recognition: RecognitionStage | None = None
        self.review = None
        self.face_stage: FaceStage | None = None
        self.room = None  # RoomStage, when there are room cameras
        self.scheduler: Scheduler | None = None
        self._tasks: list[asyncio.Task] = []
        self.started = asyncio.Event()

    def door_cameras(self) -> list[CameraConfig]:
        return [c for c in self.config.cameras if c.role == "door" and c.enabled]

    def room_cameras(self) -> list[CameraConfig]:
        return [c for c in self.config.cameras if c.role == "room" and c.enabled]

    def _buffers_of(self, role: str):
        def buffers():
            ids = {c.id for c in self.config.cameras if c.role == role}
            return {camera_id: buffer for camera_id, buffer in self.ingest.buffers().items() if camera_id in ids}
        return buffers

    async def start(self) -> None:

        config = self.config
        pack = config.models.pack
        providers = config.models.providers or None
        # input_size=None: the detector picks a letterbox size from the frame (640x384 for 720p: all faces, 5x faster)
        detector = FaceDetector(pack, score_threshold=config.thresholds.face_detection, input_size=None,
                                providers=providers)
        embedder = FaceEmbedder(pack, providers=providers)
        await self._start_services(pack)
        self.scheduler = Scheduler(window_s=config.scheduling.window_s,
                                   gate=InferenceGate(config.scheduling.inference_slots))
        self._register_cameras()
        self._start_door_stages(detector, embedder)
        if self.room_cameras():
            self._start_rooms(providers)
        if self.metrics_port is not None:
            self.metrics_port = metrics.serve(self.metrics_port)
            log.info("metrics on http://127.0.0.1:%d/metrics", self.metrics_port)
        self.started.set()

    async def _start_services(self, pack: str) -> None:
        """The event publisher, the gallery watcher, the camera readers and (if enabled) the review queue."""
        config = self.config
        self.publisher = EventPublisher(self.kafka_bootstrap_servers,
                                        client_id=config.kafka.client_id,
                                        enable_idempotence=config.kafka.enable_idempotence,
                                        security_protocol=config.kafka.security_protocol,
                                        # every event here comes from schemas.events' builders, which
                                        # validate already (overlays are built once per analysed frame)
                                        validate=False)
        await self.publisher.start()
        self.gallery_watcher = GalleryWatcher(self.database_url, pack, thresholds=config.thresholds)
        await self.gallery_watcher.start()
        self.ingest = IngestManager()
        # embedded:<mount> urls are resolved at each (re)connect
        self.ingest.sync(self.door_cameras() + self.room_cameras())
        if config.privacy.review_unknown_faces:
            self.review = ReviewQueue(self.database_url, pack, retention_days=config.privacy.review_crop_retention_days)
            await self.review.start()

    def _start_door_stages(self, detector: FaceDetector, embedder: FaceEmbedder) -> None:
        """Door cameras: batcher → face stage → recognition stage, each a task."""
        config = self.config
        self.face_stage = FaceStage(detector, config.thresholds)
        self.face_stage.scheduler = self.scheduler
        self.recognition = RecognitionStage(
            embedder=embedder,
            cameras={c.id: c for c in config.cameras},
            doors_by_camera={d.door_camera: d.id for d in config.doors},
            gallery=lambda: self.gallery_watcher.current,
            publish=self.publisher.publish,
            topic=config.kafka.topics.recognitions.name,
            model_pack=config.models.pack,
            fps_of=lambda camera_id: self.config.camera(camera_id).analysis_fps,
            review=self.review.submit if self.review is not None else None,
            overlay_topic=config.kafka.topics.overlays.name,
            scheduler=self.scheduler,
        )
        # Small queues: when inference falls behind, frames wait in the drop-oldest buffers (and are
        # shed there), not here, so latency stays bounded.
        batches: asyncio.Queue = DemandQueue()
        results: asyncio.Queue = asyncio.Queue(maxsize=2)
        self.batcher = batcher = Batcher(self._buffers_of("door"), max_batch=self.max_batch,
                                         max_wait_s=self.max_wait_s)
        self._queues = {"batches": batches, "face_results": results}
        self._tasks = [
            asyncio.create_task(batcher.run(batches), name="batcher"),
            asyncio.create_task(self.face_stage.run(batches, results), name="face-stage"),
            asyncio.create_task(self.recognition.run(results), name="recognition-stage"),
            asyncio.create_task(self._watch_queues(), name="queue-metrics"),
        ]

    def _start_rooms(self, providers) -> None:

        config = self.config
        detector = PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection,
                                  max_side=config.tracking.person_input_px, providers=providers,
                                  precision=config.models.person_precision)
        recognitions: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self.recognition_feed = RecognitionFeed(
            self.kafka_bootstrap_servers,
            config.kafka.topics.recognitions.name, {d.door_camera for d in config.doors}, recognitions)
        faces = None
        if config.tracking.room_faces:

            # the door's detector and embedder sessions (onnxruntime runs are thread-safe)
            faces = FaceAnalyzer(config.models.pack, config.thresholds, detector=self.face_stage.detector,
                                 embedder=self.recognition.embedder)
        self.room = RoomStage(config, publish=self.publisher.publish, topic=config.kafka.topics.presence.name,
                              recognitions=recognitions, occupancy_topic=config.kafka.topics.occupancy.name,
                              overlay_topic=config.kafka.topics.overlays.name, scheduler=self.scheduler,
                              gallery=lambda: self.gallery_watcher.current if self.gallery_watcher else None)
        self.person_stage = PersonStage(detector, faces=faces)
        self.person_stage.scheduler = self.scheduler
        room_batches: asyncio.Queue = DemandQueue()
        room_results: asyncio.Queue = asyncio.Queue(maxsize=2)
        self.room_batcher = Batcher(self._buffers_of("room"), max_batch=config.scheduling.room_batch,
                                    max_wait_s=self.max_wait_s)
        self._queues.update({"room_batches": room_batches, "room_results": room_results})
        self._tasks += [
            asyncio.create_task(self.recognition_feed.run(), name="recognition-feed"),
            asyncio.create_task(self.room_batcher.run(room_batches), name="room-batcher"),
            asyncio.create_task(self.person_stage.run(room_batches, room_results), name="person-stage"),
            asyncio.create_task(self.room.run(room_results), name="room-stage"),
        ]

    def reload_cameras(self, config: Config) -> None:
        """Config reload: add, remove or restart changed door cameras; the others keep running."""
        self.config = config
        if self.recognition is not None:
            self.recognition.cameras = {c.id: c for c in config.cameras}
            self.recognition.doors_by_camera = {d.door_camera: d.id for d in config.doors}
        if self.ingest is not None:
            self.ingest.sync(self.door_cameras() + self.room_cameras())
        if self.scheduler is not None:
            self._register_cameras()

    def _register_cameras(self) -> None:
        """What each camera is owed first (processor/scheduler.py); called again on a config reload."""
        scheduling = self.config.scheduling
        for camera in self.room_cameras():
            self.scheduler.register(camera.id, "room", self.config.min_tracking_fps(camera),
                                    waiting=self._waiting(camera.id))
        for camera in self.door_cameras():
            self.scheduler.register(camera.id, "door", min(scheduling.door_active_fps, camera.analysis_fps),
                                    idle=min(scheduling.door_idle_fps, camera.analysis_fps),
                                    waiting=self._waiting(camera.id))
        enabled = {c.id for c in self.door_cameras() + self.room_cameras()}
        for camera_id in self.scheduler.cameras - enabled:
            self.scheduler.forget(camera_id)

    def _waiting(self, camera_id: str):
        # the camera's current buffer (a restarted camera gets a new one)
        return lambda: len(self.ingest.buffers().get(camera_id, ()))

    async def _watch_queues(self) -> None:
        """Once a second: queue depths, and each room camera's tracking rate against its minimum."""
        shed_before: dict[str, int] = {}
        while True:
            for name, queue in self._queues.items():
                metrics.QUEUE_DEPTH.labels(name).set(queue.qsize())
            dropped = {camera_id: buffer.dropped for camera_id, buffer in self.ingest.buffers().items()}
            self.scheduler.check({c: n - shed_before.get(c, 0) for c, n in dropped.items()})
            shed_before = dropped
            await asyncio.sleep(1.0)

    async def stop(self, task_timeout_s: float = 10.0) -> None:
        """Stop the stages, flush what they hold, then stop cameras, review queue, gallery and publisher.

        Each step runs even if one before it failed or hung: a stage task that does not end within
        ``task_timeout_s`` is named in the log and left behind rather than keeping the cameras running."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=task_timeout_s)
            if pending:
                log.error("processor: stage tasks %s did not stop within %.0f s after cancel; left behind",
                          ", ".join(sorted(t.get_name() for t in pending)), task_timeout_s)
        steps = [("recognition flush", self.recognition and self.recognition.flush),
                 ("room flush", self.room and self.room.flush),
                 ("cameras", self.ingest and self.ingest.stop),
                 ("review queue", self.review and self.review.stop),
                 ("gallery watcher", self.gallery_watcher and self.gallery_watcher.stop),
                 ("event publisher", self.publisher and self.publisher.stop)]
        for name, step in steps:
            if not step:
                continue
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - the remaining steps must still run
                log.error("processor: stopping the %s failed: %s", name, exc)

    async def run_forever(self) -> None:
        await self.start()
        try:
            failed = await _first_failure(self._tasks)
            if failed is not None:
                raise failed
        finally:
            await self.stop()


async def _first_failure(tasks: list[asyncio.Task]) -> BaseException | None:
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None
