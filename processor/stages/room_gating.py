"""What a room camera's frame needs from the models: the per-camera state shared by the person stage
(:class:`PersonStage`, here: it asks :meth:`RoomGating.plan` before each detector call, in a worker
thread) and the room stage (which tells it, on the event loop, what the camera's tracks need:
:meth:`RoomGating.after_frame`).

Per camera: a :class:`~processor.stages.motion.MotionGate` (``[tracking] motion_gating``), an
:class:`~processor.stages.input_size.InputSizeChooser` (``[tracking] adaptive_input``) and whether room
faces are still wanted there (some active track's identity not yet decided by a room face). The room
stage replaces a camera's view by assignment, and the person stage reads it whole: no locks needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from infra.foundation.config import Config
from processor.frames import Frame, materialise
from processor.stages.base import BatchStage
from processor.stages.input_size import InputSizeChooser
from processor.stages.motion import Decision, MotionGate, MotionSettings
from processor.stages.room_face_sizes import FaceSizeBound

ALWAYS = Decision(True, "ungated")
# gate decisions of a settled room, the only ones a reduced detector input is used for (see RoomGating.plan):
# the people in view are all seen already (a known person moving or missed, the periodic run). With the
# reduced side on every frame, class-rush at 2 fps ran its arrivals at 576 and 512 px and two entries'
# handoffs came out ambiguous: arrivals ("free", "follow", "held") and settling counts keep the full side.
SETTLED = frozenset({"max_skip", "track", "follow_track", "missed", "still"})


@dataclass(frozen=True)
class Plan:
    """One frame's work: run the detector (at ``side``, None: the detector's own) or coast."""

    detect: bool
    side: int | None
    reason: str


class CameraGating:
    def __init__(self, gate: MotionGate | None, sizes: InputSizeChooser | None):
        self.gate = gate
        self.sizes = sizes
        self.faces_wanted = True  # until the room stage says every track's identity is decided


class RoomGating:
    """The per-camera gates of every room camera (see the module docstring)."""

    def __init__(self, config: Config, detector_side: int, *, adaptive: bool = True, hold_s: float = 0.6,
                 looks_hold_s: float = 3.0):
        self.detector_side = int(detector_side)
        self.adaptive = adaptive  # False: the detector cannot take a per-image side (not fitted to the frame)
        self.hold_s = hold_s  # after a track appears or is reacquired, every frame is detected this long
        self.looks_hold_s = looks_hold_s  # an entering track's first seconds are detected while its looks are collected
        # per camera: its frames waiting in its buffer (set by the processor; read from the stage's worker
        # thread): a camera whose next frames already wait is behind, and its still room's periodic run waits
        self.backlog: Callable[[str], int] | None = None
        self._cameras: dict[str, CameraGating] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """The campus changed: gates are rebuilt on their next frame (entry zones may have moved)."""
        self.config = config
        tracking = config.tracking
        self.settings = MotionSettings(width=tracking.motion_width_px, pixel_threshold=tracking.motion_pixel_threshold,
                                       free_px=tracking.motion_free_px, track_share=tracking.motion_track_share,
                                       max_skip_s=tracking.motion_max_skip_s,
                                       max_skip_busy_s=tracking.motion_max_skip_busy_s)
        self._cameras.clear()

    def camera(self, camera_id: str) -> CameraGating:
        gating = self._cameras.get(camera_id)
        if gating is None:
            tracking = self.config.tracking
            zones = {d.id: d.entry_zone for d in self.config.doors if d.room_camera == camera_id}
            gate = MotionGate(self.settings, zones) if tracking.motion_gating else None
            floor = min(tracking.person_input_min_px, self.detector_side)
            sizes = (InputSizeChooser(self.detector_side, floor, min_person_px=tracking.person_min_height_px)
                     if tracking.adaptive_input and self.adaptive and floor < self.detector_side else None)
            gating = self._cameras[camera_id] = CameraGating(gate, sizes)
        return gating

    def plan(self, frame: Frame) -> Plan:
        """What this frame needs (asked in frame order per camera). A reduced input side only for a settled
        room (``SETTLED``: the periodic run on a still room, someone known standing up or moving, a track
        the detector missed): the side is chosen from the people already seen, and somebody new (motion
        where no track is or in an entry zone, the frames after it, a new track, counts changing, or no
        motion gate to tell) may be smaller, farther away, than all of them, and an entering track's boxes
        give the looks and the entry place its handoff is decided on. A missed track was seen (its size
        is among those the side is chosen from); a reduced run that finds fewer people than the run
        before puts the camera back on the full side (:class:`InputSizeChooser`)."""
        gating = self.camera(frame.camera_id)
        behind = self.backlog is not None and self.backlog(frame.camera_id) > 0
        decision = self._decide(gating.gate, frame, behind) if gating.gate is not None else ALWAYS
        side = (gating.sizes.side if gating.sizes is not None and gating.sizes.side < self.detector_side
                and decision.reason in SETTLED else None)
        return Plan(decision.detect, side, decision.reason)

    @staticmethod
    def _decide(gate: MotionGate, frame: Frame, behind: bool = False):
        """The gate's decision, on a grey copy scaled from the decoded picture when the frame has one: the
        frames it coasts (most of a seated class's) are then never converted to BGR."""
        width, height = frame.size
        grey = frame.grey(*gate.small_size(width, height))
        if grey is None:
            return gate.decide(frame.image, frame.pts_s, behind=behind)
        return gate.decide_grey(grey, width, frame.pts_s, behind=behind)

    def ran(self, frame: Frame, detections: list) -> None:
        """The detector's answer on a frame planned for it."""
        gating = self.camera(frame.camera_id)
        if gating.gate is not None:
            gating.gate.ran(len(detections))
        if gating.sizes is not None:
            gating.sizes.observe(frame.pts_s, max(frame.size), [d.box[3] - d.box[1] for d in detections])

    def faces_wanted(self, camera_id: str) -> bool:
        return self.camera(camera_id).faces_wanted

    def after_frame(self, camera_id: str, tracks: Sequence, pts_s: float, *, settling: bool,
                    face_undecided: Callable[[str], bool], collecting: Callable[[str], bool]) -> None:
        """What the room stage's tracker made of a camera's frame, told to its gate: the active tracks'
        boxes; whether a room face is still wanted there (``face_undecided``: an active track whose identity
        no room face has decided, with a gallery to decide it); and every frame detected for ``hold_s`` after
        a track appeared or came back (``settling``), while an entering track's handoff still collects looks
        (``collecting``) in its first ``looks_hold_s`` (a seated one that never stands apart would hold it
        for good), and while an active track was missed by the detector's last run: the person vanished
        (hidden, walked off) and the frames until they are seen again or lost must be looked at, not
        coasted as if they were still there."""
        active = [t for t in tracks if t.state == "active"]
        arrival = settling or any(
            collecting(t.track_id) and pts_s - t.first_pts_s <= self.looks_hold_s for t in active)
        missed = any(t.missed > 0 for t in active)
        self.observe(camera_id, [t.box for t in active], headings=[t.velocity for t in active],
                     faces_wanted=any(face_undecided(t.track_id) for t in active),
                     hold_until=pts_s + self.hold_s if arrival else None,
                     watch_until=pts_s + self.hold_s if missed else None)

    def observe(self, camera_id: str, boxes, *, faces_wanted: bool, headings=(), hold_until: float | None = None,
                watch_until: float | None = None) -> None:
        """The room stage's view of a camera after a frame: its active tracks' boxes, whether any of them
        still wants a room face, and stream times up to which every frame must be detected: for an arrival
        (``hold_until``) or for a track the detector missed (``watch_until``)."""
        gating = self.camera(camera_id)
        gating.faces_wanted = faces_wanted
        if gating.gate is not None:
            gating.gate.boxes = tuple(tuple(float(v) for v in box) for box in boxes)
            gating.gate.headings = tuple((float(vx), float(vy)) for vx, vy in headings)
            if hold_until is not None:
                gating.gate.hold(hold_until)
            if watch_until is not None:
                gating.gate.hold(watch_until, arrival=False)

    def forget(self, camera_id: str) -> None:
        self._cameras.pop(camera_id, None)

    def stats(self) -> dict[str, dict]:
        """Per camera: frames detected and coasted, the gate's decisions by reason, and the input side now."""
        return {camera_id: {"detected": g.gate.detected if g.gate else None,
                            "coasted": g.gate.coasted if g.gate else None,
                            "reasons": dict(g.gate.reasons) if g.gate else {},
                            "side": g.sizes.side if g.sizes else self.detector_side}
                for camera_id, g in list(self._cameras.items())}


class PersonStage(BatchStage):
    """Room cameras: one person-detector call per batch of frames (those of its frames that need it)."""

    name = "persons"

    def __init__(self, detector, faces=None, gating: RoomGating | None = None):
        self.detector = detector
        self.faces = faces  # a FaceAnalyzer: faces on room frames confirm or correct identities
        self.gating = gating  # per camera: motion gate, input side, faces wanted (None: detect every frame)
        self.persons = 0  # detections so far
        self.detected = 0  # frames the detector ran on
        self.coasted = 0  # frames the motion gate found unchanged (detections None: the tracks coast)
        # the plans prepare() made, by batch: with room batches in flight one batch is prepared while another
        # is in its call
        self._prepared: dict[int, tuple[list[Frame], list[Plan]]] = {}
        self._counting = threading.Lock()  # the counters above, added to by calls side by side
        self._face_sizes: dict[str, FaceSizeBound] = {}  # per camera: can its people show a usable face?

    extra_work = "room_faces"  # faces are looked for only on cameras that are not behind their minimum
    prepare_always = True  # the motion gates decide in prepare(), before the gate
    one_round_per_camera = True  # a camera's plan follows from its last detection (RoomGating.ran)
    held_for_own_role = False  # the room batcher goes round-robin (BatchStage.held_for_own_role)

    def prepare(self, batch: list[Frame]) -> bool:
        """Before the turn at the inference gate (worker thread): each frame's plan, and the frames the
        detector will run on converted to BGR; a coasted frame never is (its motion check scales the decoded
        picture). False when every frame coasts: the batch then needs no model call, nor the gate."""
        if self.gating is None:
            return super().prepare(batch)
        plans = [self.gating.plan(frame) for frame in batch]
        materialise(frame for frame, plan in zip(batch, plans) if plan.detect)
        self._prepared[id(batch)] = (batch, plans)
        return any(plan.detect for plan in plans)

    def _plans(self, batch: list[Frame]) -> list[Plan] | None:
        """The plans :meth:`prepare` made for this batch, else made now (None: no gating, detect every frame)."""
        prepared = self._prepared.pop(id(batch), None)
        if prepared is not None and prepared[0] is batch:
            return prepared[1]
        return [self.gating.plan(frame) for frame in batch] if self.gating is not None else None

    def process(self, batch: list[Frame],
                extras_for: frozenset[str] | None = None) -> list[tuple[Frame, list | None, list]]:
        """(frame, person detections, room faces) per frame. Detections are None for a frame the motion
        gate coasts (nothing moved since the camera's last detector run). No faces when room faces are off,
        for a coasted frame, for a camera outside ``extras_for`` (None: every camera), or for one whose
        active tracks all have their identity decided by a room face."""
        plans = self._plans(batch)
        run = [i for i in range(len(batch)) if plans is None or plans[i].detect]
        sides = [plans[i].side for i in run] if plans is not None else []
        images = {i: batch[i].image for i in run}  # only the frames the detector runs on are converted
        found = self._detect([images[i] for i in run], sides)
        detections: list[list | None] = [None] * len(batch)
        for i, boxes in zip(run, found):
            detections[i] = boxes
            if self.gating is not None:
                self.gating.ran(batch[i], boxes)
        with self._counting:
            self.persons += sum(map(len, found))
            self.detected += len(run)
            self.coasted += len(batch) - len(run)
        faces: list[list[RoomFace]] = [[] for _ in batch]
        wanted = self._face_frames(batch, run, detections, extras_for)
        if wanted:
            # Only faces that pass the quality gate are embedded (few on room cameras: they are far).
            found_faces = self.faces.analyse([images[i] for i in wanted])
            for (i, (bound, boxes)), found in zip(wanted.items(), found_faces):
                bound.searched(batch[i].pts_s, boxes, [f.detection.box for f in found])
                faces[i] = [RoomFace(f.detection.box, f.embedding, f.quality.score)
                            for f in found if f.embedding is not None]
        return list(zip(batch, detections, faces))

    def _face_frames(self, batch: list[Frame], run: list[int], detections: list,
                     extras_for: frozenset[str] | None) -> dict[int, tuple[FaceSizeBound, list]]:
        """{index: (its camera's face-size bound, its person boxes)} of the detected frames to search for faces:
        room faces on, extras allowed for the camera, a track there still wanting a face, and somebody in the
        frame tall enough to show a usable one."""
        if self.faces is None:
            return {}
        wanted = {}
        for i in run:
            camera_id = batch[i].camera_id
            if extras_for is not None and camera_id not in extras_for:
                continue
            if self.gating is not None and not self.gating.faces_wanted(camera_id):
                continue
            bound, boxes = self._face_size(camera_id), [d.box for d in detections[i]]
            if bound.worth_searching(batch[i].pts_s, boxes):
                wanted[i] = (bound, boxes)
        return wanted

    def _face_size(self, camera_id: str) -> FaceSizeBound:
        bound = self._face_sizes.get(camera_id)
        if bound is None:
            bound = self._face_sizes[camera_id] = FaceSizeBound(self.faces.thresholds.min_face_px)
        return bound

    @property
    def faces_skipped(self) -> int:
        """Room frames not searched for faces: nobody in them tall enough to show a usable one (read from the
        event loop while the stage's worker thread may add a camera: a copy of the values is iterated)."""
        return sum(bound.skipped for bound in list(self._face_sizes.values()))

    def _detect(self, images: list[np.ndarray], sides: list[int | None]) -> list[list]:
        if not images:
            return []  # every frame coasted
        if any(side is not None for side in sides):
            return self.detector.detect(images, sides)
        return self.detector.detect(images)


@dataclass
class RoomFace:
    box: tuple[float, float, float, float]
    embedding: np.ndarray
    quality: float
