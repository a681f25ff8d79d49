"""Room cameras: person detection (batched across cameras), per-camera person tracks, the door-to-room
identity handoff, presence events and per-room analytics.

    Batcher (room cameras) → PersonStage (processor.stages.room_gating: YOLOv8 on the frames each
        camera's motion gate lets through, one onnxruntime call per batch, worker thread)
        → RoomStage (PersonTracker per camera → HandoffMatcher → presence events; room metrics)
    RecognitionFeed (processor.stages.recognition_feed: the recognition topic on Kafka, so door and room
        cameras may run in different processes or machines) → RoomStage

Times handed between door and room are Unix seconds of the frames (each camera's capture clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from infra.foundation.config import Config
from processor import metrics
from processor.appearance import describe_person
from processor.checkpoints import RoomCheckpoint
from processor.frames import Frame
from processor.handoff import HandoffMatcher
from processor.scheduler import Scheduler
from processor.stages.person_track_parts import torso_look
from processor.stages.person_tracks import PersonTracker
from processor.stages.room_gating import RoomFace, RoomGating
from processor.stages.room_handover import RoomHandover
from processor.stages.room_state import EntryLooks, Live, isolated
from processor.stages.track_trace import TraceWriter
from schemas.events import box_object, build_event

log = logging.getLogger("rollcall.room")

ROOM_PEOPLE = metrics.get_or_create(metrics.Gauge, "rollcall_room_people", "People tracked in the room now",
                                     labelnames=["room"])
ROOM_PEOPLE_AVG = metrics.get_or_create(metrics.Gauge, "rollcall_room_people_avg",
                                         "People in the room, rolling average over the last 40 analysed frames",
                                         labelnames=["room"])
ROOM_IDENTITY = metrics.get_or_create(metrics.Gauge, "rollcall_room_people_by_identity",
                                       "People in the room now, known vs unknown", labelnames=["room", "identity"])
FACE_CHECKS = metrics.get_or_create(metrics.Counter, "rollcall_room_face_checks",
                                    "Room-camera faces deciding a track's identity", labelnames=["room", "outcome"])
HANDOFFS = metrics.get_or_create(metrics.Counter, "rollcall_handoffs", "Door-to-room handoff decisions",
                                  labelnames=["room", "reason"])
# A tracker that sees the room seldom swaps people who walk past each other: watch the gaps it gets.
TRACKING_GAP = metrics.get_or_create(metrics.Histogram, "rollcall_tracking_frame_gap_seconds",
                                     "Stream time between consecutive frames a room camera's tracker saw",
                                     labelnames=["camera"], buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0))


@dataclass
class RoomStage(RoomHandover):
    """Per room camera: tracks → handoff → presence events; room analytics as metrics."""

    config: Config
    publish: Callable[[str, str, dict], bool]
    topic: str
    recognitions: asyncio.Queue
    occupancy_topic: str | None = None  # people counts once a second per room camera
    gallery: Callable[[], object] | None = None  # current Gallery: faces seen by room cameras are matched
    faces_to_decide: int = 3  # good faces on a track before the room camera's faces decide
    overlay_topic: str | None = None  # each analysed frame's tracks, for live displays
    scheduler: Scheduler | None = None  # overlays only for cameras not behind their minimum tracking rate
    trackers: dict = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    presence_events: int = 0
    first_frame: dict[str, tuple[float, float]] = field(default_factory=dict)  # camera -> (captured_at, pts_s)
    frames_tracked: dict[str, int] = field(default_factory=dict)  # camera -> frames its tracker saw
    max_gap_s: dict[str, float] = field(default_factory=dict)  # camera -> longest stream-time gap between them
    _last_pts: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, deque] = field(default_factory=dict)
    _occupancy_sent: dict[str, float] = field(default_factory=dict)  # camera -> frame time of the last one
    # capture of the frame that decided each presence event to its hand-over to the publisher (bounded)
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=100_000))
    _deciding_frame_at: float | None = None
    looks_per_entry: int = 4  # frames whose clothing descriptors are averaged for an entering track
    _entry_looks: dict[str, EntryLooks] = field(default_factory=dict)  # track id -> while its handoff waits
    # processor groups: live tracks checkpointed (to a compacted topic) and resumed by the camera's next owner
    checkpoint_topic: str | None = None
    checkpoint_every_s: float = 1.0
    owner: str = "processor"  # who writes the checkpoints
    checkpoints: Callable[[str], RoomCheckpoint | None] | None = None  # camera -> its latest checkpoint
    checkpoint_max_age_s: float = 120.0  # an older one describes a room that has moved on
    follow_max_age_s: float = 3.0  # a standby remembers its tracks' places this long, to pair with checkpoints
    owner_silent_s: float = 3.0  # a standby whose owner has not checkpointed for this long says so
    on_owner_silent: Callable[[str, bool], None] | None = None  # (standby camera, silent): the processor rerates
    _owner_silent: set[str] = field(default_factory=set)  # standby cameras whose owner went silent
    on_analysed: Callable[[str, float, float], None] | None = None  # (camera, capture time, stream time)
    resumed: dict[str, int] = field(default_factory=dict)  # camera -> tracks taken over from a checkpoint
    shadow: set[str] = field(default_factory=set)  # standby cameras: tracked and handed off, nothing published
    running: Callable[[], set[str]] | None = None  # the cameras run here now (frames of others still queued are dropped)
    _checkpointed: dict[str, float] = field(default_factory=dict)  # camera -> frame time of the last one
    gap_entry_window_s: float = 3.0  # after a resume, newcomers this soon may have come in during the gap
    _gaps: dict[str, tuple[float, float]] = field(default_factory=dict)  # camera -> (dark from, resumed at)
    _gap_waiting: dict[str, tuple] = field(default_factory=dict)  # track -> (door, entered, seen at, looks)
    _owner_ids: dict[str, dict[str, str]] = field(default_factory=dict)  # standby camera -> {own track: owner's}
    _followed_at: dict[str, float] = field(default_factory=dict)  # standby camera -> the checkpoint paired last
    _places: dict[str, dict] = field(default_factory=dict)  # standby camera -> track -> recent (time, box)
    gating: RoomGating | None = None  # the person stage's per-camera gates, told each camera's tracks
    traces: dict[str, TraceWriter | None] = field(default_factory=dict)  # camera -> its trace ([tracking] trace_dir)

    def __post_init__(self) -> None:

        tracking = self.config.tracking
        self.update_every_s = tracking.presence_update_s
        self.matcher = HandoffMatcher(self.config.doors, ambiguity_s=tracking.handoff_ambiguity_s,
                                      recognition_delay_s=tracking.recognition_delay_s)
        self.rooms = {c.id: c.room for c in self.config.cameras}
        # where people usually come in through each door (feet x of the recent entries): someone entering
        # clearly left or right of that walked in beside someone else
        self._entry_xs: dict[str, deque] = {d.id: deque(maxlen=30) for d in self.config.doors}

    def reconfigure(self, config: Config) -> None:
        """The campus's cameras or doors changed: what is pending and tracked stays."""
        self.config = config
        if self.gating is not None:
            self.gating.reconfigure(config)
        self.rooms = {c.id: c.room for c in config.cameras}
        self.matcher.set_doors(config.doors)
        for camera_id, tracker in self.trackers.items():
            zones = self._entry_zones(camera_id)
            if zones != tracker.entry_zones:
                log.info("camera %s: entry zones now %s", camera_id, zones)
                tracker.set_entry_zones(zones)

    def _entry_zones(self, camera_id: str) -> dict[str, list[tuple[float, float]]]:
        return {d.id: [tuple(map(float, p)) for p in d.entry_zone] for d in self.config.doors if d.room_camera == camera_id}

    def _tracker(self, camera_id: str, frame: Frame | None = None):

        tracker = self.trackers.get(camera_id)
        if tracker is None:
            tracking = self.config.tracking
            tracker = PersonTracker(camera_id, self.config.camera(camera_id).analysis_fps, self._entry_zones(camera_id),
                                    lost_after_s=tracking.lost_after_s, reacquire_s=tracking.reacquire_s,
                                    reacquire_heights=tracking.reacquire_heights)
            self.trackers[camera_id] = tracker
            if frame is not None and self.checkpoints is not None:
                self._resume(camera_id, tracker, frame)
        return tracker

    def _note_gap(self, camera_id: str, pts_s: float) -> None:
        self.frames_tracked[camera_id] = self.frames_tracked.get(camera_id, 0) + 1
        last = self._last_pts.get(camera_id)
        self._last_pts[camera_id] = pts_s
        if last is not None and pts_s > last:  # not across a stream restart
            gap = pts_s - last
            TRACKING_GAP.labels(camera_id).observe(gap)
            self.max_gap_s[camera_id] = max(self.max_gap_s.get(camera_id, 0.0), gap)

    def _drain_recognitions(self) -> None:
        while not self.recognitions.empty():
            r = self.recognitions.get_nowait()
            try:
                self.matcher.add_recognition(r.door_camera, r.person_id, r.event_id, r.door_time,
                                             appearance=r.appearance, side=r.side)
            except (KeyError, ValueError) as exc:
                log.warning("recognition %s not usable for handoff: %s", r.event_id, exc)

    def handle(self, results: list[tuple[Frame, list | None, list]]) -> None:
        """PersonStage's results: (frame, person detections or None for a coasted frame, room faces) per frame."""
        self._drain_recognitions()
        running = self.running() if self.running is not None else None
        for frame, detections, faces in results:
            camera_id = frame.camera_id
            if running is not None and camera_id not in running:
                continue  # released while its frame was in flight: the camera's next owner has it
            self._deciding_frame_at = frame.captured_at
            self.first_frame.setdefault(camera_id, (frame.captured_at, frame.pts_s))
            self._note_gap(camera_id, frame.pts_s)
            if self.on_analysed is not None and camera_id not in self.shadow:
                self.on_analysed(camera_id, frame.captured_at, frame.pts_s)
            width, height = frame.size  # a coasted frame is never converted to BGR
            tracker = self._tracker(camera_id, frame)
            settling = False
            if detections is None:
                tracker.coast(frame.pts_s)  # nothing moved: the tracks stay as they were
                if (trace := self._trace(camera_id, tracker)) is not None:
                    trace.coast(frame.pts_s)
            else:
                settling = self._track(tracker, frame, detections, (width, height))
            now = frame.captured_at
            for track in tracker.open_tracks:
                live = self.live.get(track.track_id)
                if live is not None and track.state == "active":
                    live.last_seen, live.box = now, track.box
                    if now - live.last_update >= self.update_every_s:
                        live.last_update = now
                        self._emit("update", track.track_id, live)
            if faces:
                self._faces(tracker, frame, faces)
            self._tell_gating(camera_id, tracker, frame.pts_s, settling)
            if camera_id in self.shadow:
                self._follow_owner(camera_id, tracker, frame)
                continue  # a standby: its state is kept warm, nothing leaves it
            self._analytics(camera_id, frame)
            if self.checkpoint_topic and frame.captured_at - self._checkpointed.get(camera_id, 0.0) >= self.checkpoint_every_s:
                self.checkpoint(camera_id, frame.captured_at)
            if self.scheduler is None or self.scheduler.extras_allowed(camera_id, "overlays"):
                self._overlay(frame, tracker, (width, height))
        # Decided on the cameras' clock (the newest frame's capture time), not the wall clock: a
        # backlog of frames must not close handoff windows before its entries are seen.
        newest = max((frame.captured_at for frame, _, _ in results), default=None)
        for assignment in (self.matcher.assign(newest, cameras=set(self.trackers)) if newest is not None else []):
            self._on_assignment(assignment)
            if not self.matcher.is_pending(assignment.track_id):  # an ambiguous one is asked again on new looks
                self._entry_looks.pop(assignment.track_id, None)

    def _track(self, tracker, frame: Frame, detections: list, frame_size: tuple[int, int]) -> bool:
        """The tracker's update on a detected frame and what follows from its events; whether a track
        appeared or came back (its gate then looks again for a while)."""
        settling = False
        trace = self._trace(frame.camera_id, tracker)
        looks = [torso_look(frame.image, d.box) for d in detections] if trace is not None else None
        events = tracker.update(frame.pts_s, detections, frame.image, looks=looks)
        if trace is not None:
            trace.frame(frame.pts_s, detections, looks, events)
        for event in events:
            wall = frame.captured_at - (frame.pts_s - event.pts_s)
            self._on_track_event(event, wall, frame_size)
            settling = settling or event.kind in ("appeared", "reacquired")
        self._describe_entries(tracker, frame, detections)
        self._describe_gap_entries(tracker, frame, detections)
        return settling

    def _trace(self, camera_id: str, tracker) -> TraceWriter | None:
        """The camera's trace when ``[tracking] trace_dir`` is set (opened at its first frame), else None."""
        folder = self.config.tracking.trace_dir
        if not folder:
            return None
        if camera_id not in self.traces:
            try:
                self.traces[camera_id] = TraceWriter(folder, tracker)
                log.info("camera %s: tracing the room tracker to %s", camera_id, self.traces[camera_id].path)
            except OSError as exc:  # a debugging aid must not stop the camera
                log.error("camera %s: cannot write a trace under %s: %s", camera_id, folder, exc)
                self.traces[camera_id] = None
        return self.traces[camera_id]

    def _tell_gating(self, camera_id: str, tracker, pts_s: float, settling: bool) -> None:
        """The camera's gate learns what its tracks need (``RoomGating.after_frame``)."""
        if self.gating is None:
            return
        gallery = self.gallery() if self.gallery is not None else None
        faces = gallery is not None and len(gallery) > 0  # nobody enrolled: no face can decide
        self.gating.after_frame(
            camera_id, tracker.open_tracks, pts_s, settling=settling,
            face_undecided=lambda t: faces and (t not in self.live or not self.live[t].face_decided),
            collecting=lambda t: t in self._entry_looks and not self._entry_looks[t].done(self.looks_per_entry))

    def _on_track_event(self, event, wall: float, frame_size: tuple[int, int]) -> None:
        room_id = self.rooms.get(event.camera_id, "unknown")
        if event.kind == "appeared":
            live = Live(room_id, event.camera_id, wall, wall, event.box, frame_size, last_update=wall)
            self.live[event.track_id] = live
            self._emit("enter", event.track_id, live)
            if event.entered_via is not None:
                x1, _, x2, y2 = event.box
                side = self._entry_side(event.entered_via, (x1 + x2) / 2, x2 - x1)
                self.matcher.add_entry(event.entered_via, event.track_id, wall, position=((x1 + x2) / 2, y2),
                                       side=side)
                self._entry_looks[event.track_id] = EntryLooks()
            else:
                self._gap_entry(event, wall)
        elif event.kind == "reacquired":
            live = self.live.get(event.track_id)
            if live is not None:  # the same track continues: it keeps its identity, now carried by position
                live.last_seen, live.box = wall, event.box
                if live.person_id is not None:
                    live.identity_source = "reacquired"
                self._emit("update", event.track_id, live)
        elif event.kind == "exited":
            live = self.live.pop(event.track_id, None)
            self.matcher.track_exited(event.track_id, room_camera=event.camera_id)
            if live is not None:
                self._emit("exit", event.track_id, live)

    def _entry_side(self, door_id: str, x: float, width: float) -> str | None:
        """"left"/"right" when the feet are more than a quarter of a box width left or right of where
        people usually come in through this door (the median of its recent entries), else None (the
        middle: a single person, or too few entries seen yet)."""
        recent = self._entry_xs.setdefault(door_id, deque(maxlen=30))
        side = None
        if len(recent) >= 3:
            usual = float(np.median(recent))
            side = "left" if x < usual - width / 4 else "right" if x > usual + width / 4 else None
        recent.append(x)
        return side

    def _describe_entries(self, tracker, frame: Frame, detections: list) -> None:
        """The clothing of each track whose handoff is still pending, from this frame: averaged over
        ``looks_per_entry`` frames where its box overlaps no other detection (a shared box mixes two
        people's clothes), or, until there are such frames, over the others."""
        if not self._entry_looks:
            return
        boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
        for track in tracker.open_tracks:
            looks = self._entry_looks.get(track.track_id)
            if looks is None:
                continue
            if not self.matcher.is_pending(track.track_id):
                del self._entry_looks[track.track_id]
                continue
            if track.state != "active" or track.last_pts_s != frame.pts_s or looks.done(self.looks_per_entry):
                continue
            look = describe_person(frame.image, track.box)
            if look is None:
                continue
            looks.add(look, isolated(track.box, boxes), self.looks_per_entry)
            self.matcher.set_entry_appearance(frame.camera_id, track.track_id, looks.mean())

    def _on_assignment(self, assignment) -> None:
        live = self.live.get(assignment.track_id)
        room_id = self.rooms.get(assignment.room_camera, "unknown")
        HANDOFFS.labels(room_id, "resolved_late" if assignment.late else assignment.reason).inc()
        if live is None:
            return  # the track ended before its handoff was decided
        if live.identity_source == "face":  # the room camera already saw the face: it outranks the door
            self.matcher.set_identity(assignment.room_camera, assignment.track_id, live.person_id)
            return
        handed = assignment.recognition_event_id is not None
        previous = live.person_id
        live.person_id = assignment.person_id
        live.identity_source = "handoff" if handed else "none"
        live.handoff = ({"door_id": assignment.door_id, "recognition_event_id": assignment.recognition_event_id,
                         "transit_s": max(0.0, float(assignment.transit_s or 0.0))} if handed else None)
        self._emit("identity", assignment.track_id, live, ambiguous=assignment.ambiguous,
                   previous_person_id=previous)
        log.info("handoff %s in %s: %s (%s%s, appearance distance %s, margin %s)", assignment.track_id, room_id,
                 assignment.person_id or "unknown", assignment.reason, ", late" if assignment.late else "",
                 _fmt(assignment.appearance_distance), _fmt(assignment.margin))

    def _faces(self, tracker, frame: Frame, faces: list[RoomFace]) -> None:
        """Each face to the person track whose head it is in (the top third of its box, centred); once a
        track has ``faces_to_decide`` of them the gallery decides: the same person confirms the identity
        (source 'face'), another known person corrects it (an 'identity' event with previous_person_id),
        an unknown face changes nothing. One identity stays on one live track."""
        gallery = self.gallery() if self.gallery is not None else None
        if gallery is None or len(gallery) == 0:
            return
        active = [t for t in tracker.open_tracks if t.state == "active" and t.last_pts_s == frame.pts_s]
        for face in faces:
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            owners = [t for t in active if t.box[0] <= cx <= t.box[2]
                      and t.box[1] <= cy <= t.box[1] + (t.box[3] - t.box[1]) / 3]
            if len(owners) != 1:
                continue  # nobody's, or between two people: not evidence for either
            live = self.live.get(owners[0].track_id)
            if live is None or live.face_decided:
                continue
            weighted = face.embedding.astype(np.float32) * max(face.quality, 1e-3)
            live.face_sum = weighted if live.face_sum is None else live.face_sum + weighted
            live.face_count += 1
            if live.face_count >= self.faces_to_decide:
                live.face_decided = True
                self._face_decision(owners[0].track_id, live, gallery.match(live.face_sum[None, :])[0])

    def _face_decision(self, track_id: str, live: Live, match) -> None:
        person = match.person_id
        if person is None:
            return  # the face is nobody enrolled (or not sure): it proves nothing against the handoff
        if person == live.person_id:
            live.identity_source, live.handoff = "face", None
            FACE_CHECKS.labels(live.room_id, "confirmed").inc()
            self._emit("update", track_id, live)
            return
        for other_id, other in self.live.items():  # one identity, one live track: the face wins
            if other_id != track_id and other.person_id == person and other.camera_id == live.camera_id:
                other.person_id, other.identity_source, other.handoff = None, "none", None
                self.matcher.set_identity(other.camera_id, other_id, None)
                self._emit("identity", other_id, other, previous_person_id=person)
        previous = live.person_id
        live.person_id, live.identity_source, live.handoff = person, "face", None
        self.matcher.set_identity(live.camera_id, track_id, person)
        FACE_CHECKS.labels(live.room_id, "corrected" if previous else "identified").inc()
        log.info("room face on %s in %s: %s (was %s, score %.3f)", track_id, live.room_id, person,
                 previous or "unknown", match.score)
        self._emit("identity", track_id, live, previous_person_id=previous)

    def _emit(self, kind: str, track_id: str, live: Live, *, ambiguous: bool = False,
              previous_person_id: str | None = None) -> None:

        if live.camera_id in self.shadow:
            return  # a standby publishes nothing until it takes the camera over
        event = build_event("presence", {
            "kind": kind, "room_id": live.room_id, "camera_id": live.camera_id, "track_id": track_id,
            "identity": "known" if live.person_id else "unknown", "person_id": live.person_id,
            "identity_source": live.identity_source,
            "handoff": live.handoff if live.identity_source == "handoff" else None,
            "ambiguous": bool(ambiguous and live.person_id is None and live.identity_source == "none"),
            "previous_person_id": previous_person_id if kind == "identity" else None,
            "frame_time": live.last_seen, "first_seen": live.first_seen, "last_seen": live.last_seen,
            "dwell_s": max(0.0, live.last_seen - live.first_seen), "box": live.box, "frame_size": live.frame_size,
        })
        self.publish(self.topic, live.room_id, event)
        self.presence_events += 1
        if self._deciding_frame_at is not None:
            latency = time.time() - self._deciding_frame_at
            self.latencies_s.append(latency)
            metrics.EVENT_LATENCY.labels("presence").observe(latency)

    def _analytics(self, camera_id: str, frame: Frame) -> None:
        room_id = self.rooms.get(camera_id, "unknown")
        present = [live for live in self.live.values() if live.camera_id == camera_id]
        counts = self._counts.setdefault(camera_id, deque(maxlen=40))
        counts.append(len(present))
        average = sum(counts) / len(counts)
        known = sum(1 for live in present if live.person_id)
        ROOM_PEOPLE.labels(room_id).set(len(present))
        ROOM_PEOPLE_AVG.labels(room_id).set(average)
        ROOM_IDENTITY.labels(room_id, "known").set(known)
        ROOM_IDENTITY.labels(room_id, "unknown").set(len(present) - known)
        last = self._occupancy_sent.get(camera_id)
        if self.occupancy_topic is None or (last is not None and frame.captured_at - last < 1.0):
            return

        self._occupancy_sent[camera_id] = frame.captured_at
        self.publish(self.occupancy_topic, room_id, build_event("occupancy", {
            "room_id": room_id, "camera_id": camera_id, "frame_time": frame.captured_at,
            "people": len(present), "people_avg": round(average, 3), "known": known,
            "unknown": len(present) - known}))

    def _overlay(self, frame: Frame, tracker, frame_size: tuple[int, int]) -> None:
        if self.overlay_topic is None:
            return

        objects = []
        for track in tracker.open_tracks:
            live = self.live.get(track.track_id)
            if live is None or track.state != "active" or track.last_pts_s != frame.pts_s:
                continue
            pending = self.matcher.is_pending(track.track_id)
            objects.append({"track_id": track.track_id, "kind": "person", "box": box_object(track.box),
                            "label": live.person_id or ("…" if pending else "unknown"), "person_id": live.person_id})
        self.publish(self.overlay_topic, frame.camera_id, build_event("overlay", {
            "camera_id": frame.camera_id, "room_id": self.rooms.get(frame.camera_id, "unknown"), "role": "room",
            "frame_time": frame.captured_at, "pts_s": frame.pts_s, "frame_size": frame_size, "objects": objects}),
            best_effort=True)

    def _flush_tracker(self, tracker) -> None:
        last_pts = max((t.last_pts_s for t in tracker.open_tracks), default=0.0)
        for event in tracker.flush(last_pts):
            live = self.live.get(event.track_id)
            if live is not None:
                self._on_track_event(event, live.last_seen, live.frame_size)

    def flush(self) -> None:
        """End every open track (shutdown): exit events, so downstream never keeps a ghost in the room."""
        for tracker in self.trackers.values():
            self._flush_tracker(tracker)
        for trace in self.traces.values():
            if trace is not None:
                trace.close()
        self.traces.clear()

    async def run(self, inbox: asyncio.Queue) -> None:
        while True:
            self.handle(await inbox.get())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
