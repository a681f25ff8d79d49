"""The processor service: the door and room pipelines (processor/pipeline.py, processor/stages/) on the
cameras it runs, until stopped.

Alone it runs every enabled camera of its configuration; started by `rollcall run` (``follow_database``)
it follows the campus as PostgreSQL holds it instead, read every ``group.cameras_poll_s`` as a group member
reads it (processor/group/catalogue.py): a camera added, edited, disabled or deleted in the dashboard, or an
entry zone redrawn, reaches it without a restart. In a group (`rollcall run --group NAME`,
processor/group/) it runs the cameras of the slots the group's Kafka assignment gives it, from the campus
as PostgreSQL has it, and follows both as they change: cameras start and stop without a restart, room
cameras that move carry their live tracks over (processor/checkpoints.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from infra.foundation.config import CameraConfig, Config
from processor import face_precision, health, metrics
from processor.batcher import Batcher, DemandQueue
from processor.checkpoints import CheckpointTable
from processor.gallery import GalleryWatcher, match_settings
from processor.group.catalogue import Catalogue, CatalogueWatcher
from processor.group.coordinator import GroupCoordinator
from processor.ingest import IngestManager
from processor.pipeline import RecognitionStage
from processor.publisher import EventPublisher
from processor.review import ReviewQueue
from processor.scheduler import InferenceGate, Scheduler
from processor.stages.liveness import LivenessSettings
from processor.stages.faces import FaceAnalyzer, FaceDetector, FaceEmbedder
from processor.stages.door_faces import FaceStage
from processor.stages.persons import PersonDetector
from processor.stages.recognition_feed import RecognitionFeed
from processor.stages.room import RoomStage
from processor.stages.room_gating import PersonStage, RoomGating
from processor.status import AnalysisLog, StatusReporter, processor_id
from processor.supervisor import StageFailed, StageSupervisor, describe

log = logging.getLogger("rollcall.processor")


def door_face_models(config: Config, providers=None) -> tuple[FaceDetector, FaceEmbedder]:
    """The door's face detector and embedder (the room's faces share them)."""
    pack = config.models.pack
    threads = config.scheduling.inference_threads or None  # None: onnxruntime's default, every core
    # input_size=None: the detector picks a letterbox size from the frame (640x384 for 720p: all faces, 5x faster)
    detector = FaceDetector(pack, score_threshold=config.thresholds.face_detection, input_size=None,
                            providers=providers, threads=threads)
    # int8 only once its check on the photo set accepted it (processor/face_precision.py), else fp32
    session = face_precision.embedder_session(pack, config.models.face_embedder_precision, config.thresholds,
                                              providers, threads)
    return detector, FaceEmbedder(pack, providers=providers, session=session, threads=threads)


class Processor:
    """Runs the door and room pipelines on its cameras until stopped (see the module)."""

    def __init__(self, config: Config, *, database_url: str,
                 kafka_bootstrap_servers: str, metrics_port: int | None = None,
                 max_batch: int = 8, max_wait_s: float = 0.02, group: str | None = None,
                 follow_database: bool = False):
        if group:
            config = config.model_copy(update={"group": config.group.model_copy(update={"name": group})})
        self.config = config
        self.group = config.group.name
        # the ids of the cameras this member runs; None outside a group: every enabled camera
        self.owned: set[str] | None = set() if self.group else None
        # outside a group: follow PostgreSQL's camera and door tables (a group member does as its group says)
        self.follow_database = follow_database and not self.group
        self._campus_seen = False  # a catalogue with cameras read (an empty table before it is not the campus)
        self.standby: set[str] = set()  # room cameras tracked here unpublished, for a fast takeover
        self.awake: set[str] = set()  # standbys whose owner went silent: tracked at the full rate meanwhile
        self.processor_id = processor_id()
        self.analysis = AnalysisLog()
        self.status: StatusReporter | None = None
        self.checkpoints: CheckpointTable | None = None
        self.coordinator: GroupCoordinator | None = None
        self.recognition_feed: RecognitionFeed | None = None
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
        self._door_active_at: dict[str, float] = {}  # monotonic time a face was last in view, per door camera
        self._tasks: list[asyncio.Task] = []
        # the stage loops, restarted a few times when one dies, then the processor stops (run_forever)
        self.supervisor = StageSupervisor()
        self.started = asyncio.Event()
        self._switch_interval: float | None = None  # the process's own, while the processor runs (see start)

    def door_cameras(self) -> list[CameraConfig]:
        return self._running("door")

    def room_cameras(self) -> list[CameraConfig]:
        return self._running("room")

    def _running(self, role: str) -> list[CameraConfig]:
        """The enabled cameras of ``role`` this processor runs: its own, and (rooms) those it keeps a standby
        of, at the standby rate."""
        owned = [c for c in self.config.cameras
                 if c.role == role and c.enabled and (self.owned is None or c.id in self.owned)]
        fps = self.config.group.standby_fps
        return owned + [c if c.id in self.awake else
                        c.model_copy(update={"analysis_fps": min(c.analysis_fps, fps), "min_tracking_fps": None})
                        for c in self.config.cameras if c.role == role and c.enabled and c.id in self.standby]

    def _room_ids(self) -> set[str]:
        """The ids of :meth:`room_cameras` (own and standby), without building their configs."""
        return {c.id for c in self.config.cameras if c.role == "room" and c.enabled
                and (self.owned is None or c.id in self.owned or c.id in self.standby)}

    def published_cameras(self) -> dict[str, str]:
        """Camera id -> role of the cameras whose events this processor publishes (not its standbys)."""
        return {c.id: c.role for c in self.door_cameras() + self.room_cameras() if c.id not in self.standby}

    def _buffers_of(self, role: str):
        def buffers():
            ids = {c.id for c in self.config.cameras if c.role == role}
            return {camera_id: buffer for camera_id, buffer in self.ingest.buffers().items() if camera_id in ids}
        return buffers

    async def start(self) -> None:

        config = self.config
        # A model call's worker thread needs the interpreter lock back to hand in its result, and the lock is
        # held meanwhile by the decoder threads' and the event loop's Python; at Python's 5 ms switch interval
        # the call's turn at the gate lasted that much longer (bench persons --streams 12, four runs each: 41.6-44.6
        # ms a detector batch at 5 ms, 39.5-43.3 at 1 ms; README "Benchmarks"). Process-wide: the processor owns
        # its process; put back when it stops.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(config.scheduling.gil_switch_interval_ms / 1000.0)
        pack = config.models.pack
        providers = config.models.providers or None
        detector, embedder = door_face_models(config, providers)
        await self._start_services(pack)
        self.scheduler = Scheduler(window_s=config.scheduling.window_s,
                                   gate=InferenceGate(config.scheduling.inference_slots))
        self._register_cameras()
        self._start_door_stages(detector, embedder)
        if self.room_cameras() or self.group or self.follow_database:  # a room camera may come at any time
            self._start_rooms(providers)
        self._start_status()
        if self.group:
            await self._join_group()
        elif self.follow_database:
            watcher = CatalogueWatcher(self.database_url, 0, config.group.cameras_poll_s, self._follow_campus)
            self._tasks.append(asyncio.create_task(watcher.run(), name="camera-catalogue"))
        if self.metrics_port is not None:
            self.metrics_port = health.serve(self.metrics_port, self.health)
            log.info("metrics on http://127.0.0.1:%d/metrics, readiness on /health", self.metrics_port)
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
        trained = detector.pack.optional("liveness") if config.liveness.enabled else None
        if trained is not None:  # ready in the pack, not yet in the decision: say so rather than imply it
            log.warning("model pack %s holds a liveness model (%s); this version decides liveness on its "
                        "hand-made cues only (processor/stages/liveness.py)", detector.pack.name, trained[1].name)
        self.face_stage = FaceStage(detector, config.thresholds)
        self.face_stage.scheduler = self.scheduler
        self.face_stage.in_flight = config.scheduling.door_batches_in_flight
        door_buffers = self._buffers_of("door")
        self.face_stage.waiting_priority = lambda: self.scheduler.best_priority(
            camera_id for camera_id, buffer in door_buffers().items() if len(buffer))
        match_threshold = match_settings(config.models.pack, config.thresholds)[0]
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
            on_analysed=self.analysis.analysed,
            on_activity=self._door_activity,
            fragment_similarity=match_threshold,
            stranger_below=match_threshold - config.thresholds.face_stranger_gap,
            known_above=match_threshold + config.thresholds.face_known_gap,
            clear_after=config.thresholds.face_clear_after,
            liveness=LivenessSettings(config.liveness.suspect_below, config.liveness.min_frames,
                                      config.liveness.clear_frames)
            if config.liveness.enabled else None,
            face_gone_s=config.tracking.door_face_gone_s or None,
        )
        # Small queues: when inference falls behind, frames wait in the drop-oldest buffers (and are
        # shed there), not here, so latency stays bounded.
        batches: asyncio.Queue = DemandQueue()
        results: asyncio.Queue = asyncio.Queue(maxsize=2)
        self.batcher = batcher = Batcher(self._buffers_of("door"), max_batch=self.max_batch,
                                         max_wait_s=self.max_wait_s,
                                         rank=lambda camera_id: self.scheduler.priority([camera_id]))
        self._queues = {"batches": batches, "face_results": results}
        self._tasks = [
            self._supervised("batcher", lambda: batcher.run(batches)),
            self._supervised("face-stage", lambda: self.face_stage.run(batches, results)),
            self._supervised("recognition-stage", lambda: self.recognition.run(results)),
            self._supervised("queue-metrics", self._watch_queues),
        ]

    def _supervised(self, name: str, loop) -> asyncio.Task:
        """The stage loop ``loop()`` as a task of the supervisor (restarted when it dies, a few times)."""
        return self.supervisor.start(name, loop)

    def _door_activity(self, camera_id: str, active: bool) -> None:
        """Nobody at the door for ``door_idle_hold_s``: its camera decodes keyframes only ([scheduling]
        door_idle_keyframes; processor.ingest.idle). The hold keeps a passage whose face is lost for a
        moment (turned away, between two tracks) in full decoding."""
        scheduling = self.config.scheduling
        now = time.monotonic()
        if active:
            self._door_active_at[camera_id] = now
        held = now - self._door_active_at.get(camera_id, -float("inf")) < scheduling.door_idle_hold_s
        if self.ingest is not None:
            self.ingest.set_idle(camera_id, not active and not held and scheduling.door_idle_keyframes)
            if self.scheduler is not None:  # an idle door is owed no more than its keyframes
                self.scheduler.cap_idle(camera_id, self.ingest.keyframe_rate(camera_id))

    def _start_rooms(self, providers) -> None:

        config = self.config
        detector = PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection,
                                  max_side=config.tracking.person_input_px, providers=providers,
                                  precision=config.models.person_precision,
                                  threads=config.scheduling.inference_threads or None)
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
                              gallery=lambda: self.gallery_watcher.current if self.gallery_watcher else None,
                              on_analysed=self.analysis.analysed, owner=self.processor_id,
                              checkpoint_every_s=config.group.checkpoint_every_s)
        # per camera: the motion gate, the detector's input side, whether room faces are still wanted
        gating = RoomGating(config, detector.input_side, adaptive=detector.fit_to_frame)
        gating.backlog = lambda camera_id: self.ingest.waiting(camera_id)
        self.room.gating = gating
        if self.group:
            self.checkpoints = CheckpointTable(self.kafka_bootstrap_servers, config.kafka.topics.room_tracks.name,
                                               client_id=f"{config.kafka.client_id}-checkpoints")
            self.room.checkpoint_topic = config.kafka.topics.room_tracks.name
            self.room.checkpoints = self.checkpoints.get
            self.room.running = self._room_ids  # asked once per batch: ids only, no copies
            self.room.on_owner_silent = self._owner_silent
            self._tasks.append(self._supervised("room-checkpoints", self.checkpoints.run))
        self.person_stage = PersonStage(detector, faces=faces, gating=gating)
        self.person_stage.scheduler = self.scheduler
        self.person_stage.in_flight = config.scheduling.room_batches_in_flight
        room_batches: asyncio.Queue = DemandQueue()
        room_results: asyncio.Queue = asyncio.Queue(maxsize=2)
        self.room_batcher = Batcher(self._buffers_of("room"), max_batch=config.scheduling.room_batch,
                                    max_wait_s=self.max_wait_s)
        self._queues.update({"room_batches": room_batches, "room_results": room_results})
        self._tasks += [
            self._supervised("recognition-feed", self.recognition_feed.run),
            self._supervised("room-batcher", lambda: self.room_batcher.run(room_batches)),
            self._supervised("person-stage", lambda: self.person_stage.run(room_batches, room_results)),
            self._supervised("room-stage", lambda: self.room.run(room_results)),
        ]

    def _start_status(self) -> None:
        """The processor_status events: which cameras run here, and how their analysis goes."""
        self.status = StatusReporter(
            self.publisher.publish, self.config.kafka.topics.processors.name, self.analysis,
            processor=self.processor_id, group=self.group,
            running=self.published_cameras,
            slots=lambda: sorted(self.coordinator.slots) if self.coordinator else [],
            generation=lambda: self.coordinator.member.generation if self.coordinator else 0,
            every_s=self.config.group.status_every_s)
        self._tasks.append(self._supervised("processor-status", self.status.run))

    async def _join_group(self) -> None:
        """Group mode: the camera catalogue from PostgreSQL and the member's slots from Kafka decide the cameras."""
        self.coordinator = GroupCoordinator(self.config, database_url=self.database_url,
                                            bootstrap_servers=self.kafka_bootstrap_servers,
                                            member_name=self.processor_id, apply=self.run_cameras)
        await self.coordinator.prepare()
        self._tasks.append(asyncio.create_task(self.coordinator.run(), name="group-member"))
        log.info("processor %s: member of group %s", self.processor_id, self.group)

    def run_cameras(self, config: Config, owned: set[str], standby: set[str] = frozenset()) -> None:
        """Group mode: the campus as the database has it, the cameras this member runs now and the room
        cameras it keeps a standby of. A camera that stops here because another member takes it over hands
        its room tracks on (a checkpoint); one that left the campus ends them; a standby that becomes this
        member's camera starts publishing what it has kept warm."""
        before = {c.id for c in self.door_cameras() + self.room_cameras()}
        promoted = self.standby & set(owned)
        self.owned, self.standby = set(owned), set(standby)
        self.awake &= self.standby
        on_campus = {c.id for c in config.cameras if c.enabled}
        self.config = config
        after = {c.id for c in self.door_cameras() + self.room_cameras()}
        for camera_id in before - after:
            if self.room is not None:
                self.room.release(camera_id, moved=camera_id in on_campus)
            if self.recognition is not None:
                self.recognition.release(camera_id)
            self.analysis.forget(camera_id)
        if self.room is not None:
            self.room.reconfigure(config)
            self.room.shadow = set(standby)
            for camera_id in promoted:
                self.room.promote(camera_id)
        if self.recognition_feed is not None:
            self.recognition_feed.door_cameras = {d.door_camera for d in config.doors}
        self.reload_cameras(config)

    def _follow_campus(self, catalogue: Catalogue) -> None:
        """Outside a group: every enabled camera of the campus as PostgreSQL holds it now, as a member applies
        what it owns (:meth:`run_cameras`: started, restarted, stopped; zones redrawn in place). Until the
        table has held a camera, the file's cameras run: an empty table is a database not loaded yet
        (`rollcall db load-config`), not a campus without cameras."""
        if not catalogue.cameras and not self._campus_seen:
            log.warning("processor: the camera table is empty (run `rollcall db load-config`); running the "
                        "config file's %d camera(s) until it has some", len(self.config.cameras))
            return
        self._campus_seen = True
        self.run_cameras(catalogue.applied_to(self.config), {c.id for c in catalogue.cameras})

    def _owner_silent(self, camera_id: str, silent: bool) -> None:
        """A standby whose owner stopped checkpointing tracks the camera at its full rate until the owner is
        heard again or the group hands the camera over: the owner may be gone, and whoever comes in before
        the group notices (its session timeout) must be seen as well as the owner would have seen them."""
        if silent:
            self.awake.add(camera_id)
        else:
            self.awake.discard(camera_id)
        if self.ingest is not None:
            self.ingest.sync(self.door_cameras() + self.room_cameras())  # a new rate, no reconnect

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
        return lambda: self.ingest.waiting(camera_id)

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
                 # in a group the room's tracks go on with the camera's next owner: checkpointed, not ended
                 ("room flush", self.room and (self._hand_over_rooms if self.group else self.room.flush)),
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
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def _hand_over_rooms(self) -> None:
        for camera_id in list(self.room.trackers):
            self.room.release(camera_id, moved=True)

    def health(self) -> dict:
        """Readiness (processor/health.py): ``ok`` once started with every stage task running,
        ``degraded`` while one waits to restart, ``failed`` once one gave up (the processor is stopping)."""
        if self.supervisor.failure is not None:
            state = "failed"
        elif not self.started.is_set():
            state = "starting"
        else:
            state = "ok" if self.supervisor.healthy else "degraded"
        return {"state": state, "processor_id": self.processor_id, "stages": self.supervisor.report()}

    async def run_forever(self) -> None:
        """Start, then run until cancelled; a stage that keeps dying (or the group membership failing)
        stops it with a one-line :class:`StageFailed`."""
        await self.start()
        try:
            await _first_failure(self.supervisor, [t for t in self._tasks if t not in self.supervisor.tasks])
        finally:
            await self.stop()


async def _first_failure(supervisor: StageSupervisor, unsupervised: list[asyncio.Task]) -> None:
    """Wait until a supervised stage gives up or an unsupervised task ends; raise what stops the processor."""
    given_up = asyncio.create_task(supervisor.wait_failed())
    try:
        done, _ = await asyncio.wait([given_up, *unsupervised], return_when=asyncio.FIRST_COMPLETED)
    finally:
        given_up.cancel()
    if given_up in done:
        raise supervisor.failure
    task = next(iter(done))
    error = None if task.cancelled() else task.exception()
    raise StageFailed(f"processor stopped: its {task.get_name()} task ended"
                      + (f" with {describe(error)}" if error is not None else "")) from error
