"""Person tracks on a room camera: who appeared (and through which door), who was lost, who left.

One :class:`PersonTracker` per room camera. Detections (:class:`processor.stages.persons.PersonDetection`)
are tracked frame to frame with ByteTrack (the ``trackers`` library, fed each frame's stream time so dropped
frames are handled in time, not in frame counts). On top of ByteTrack's short-lived ids the tracker keeps
Rollcall tracks with a stable ``track_id`` (``<camera>-<run id>-<counter>``; the random run id keeps ids
unique across processor restarts) and turns their life into :class:`TrackEvent` s:

``appeared``
    A new ByteTrack id that does not continue an earlier track. ``entered_via`` is the door id when the
    first box's bottom centre (the feet) lies in that door's entry zone (``supervision.PolygonZone``,
    anchor ``BOTTOM_CENTER``), else ``None`` (someone first seen in the middle of the room). ByteTrack
    confirms a track only after ``minimum_consecutive_frames`` sightings, by when someone walking in at a
    low analysis rate may have left the zone: the not-yet-confirmed detections of the last
    ``backdate_s`` are kept, and a new track that continues one seen in a zone (feet within half a box
    height plus a box height per second since) entered through that door, at that earlier time.
``lost``
    An active track not seen for ``lost_after_s`` of stream time.
``reacquired``
    A new ByteTrack id whose first bottom centre is within ``reacquire_heights`` box heights of the last
    bottom centre of a track of similar height (within a factor 1.4)
    unseen for less than ``reacquire_s``, and not in an entry zone: it continues that track (same
    ``track_id``) instead of appearing. Near means within that reach of where the feet were or of
    where they were heading (their smoothed velocity, up to 1.5 s ahead, the reach widening with the
    prediction), so someone walking behind another person is picked up further along their way. Given
    the frame, a track also keeps a colour signature of the torso (hue-saturation histogram), and a
    clearly different-looking person (Bhattacharyya distance above ``max_look_distance``) never
    continues it. A track that was not yet declared lost is continued silently (that
    is ByteTrack's own id switch, not an event). Someone who vanished while their box touched another
    track's was hidden behind that person and is looked for next to them (within a box height), and
    a confident detection ByteTrack has not confirmed yet can continue an unseen track too (at low
    analysis rates a brisk walker's boxes never overlap from frame to frame, so ByteTrack would only
    confirm them once they stop).
``crossings``
    Colour signatures are learnt only from boxes no other detection overlaps, and not while a track
    touched another one in the last ``swap_window_s``. When two tracks that touched stand apart again
    and each box looks clearly more like the other track (by ``swap_margin``), ByteTrack swapped them
    while they overlapped: each track gets its own person back (``swaps_undone``).
``exited``
    A lost track whose last bottom centre was in an entry zone after it had been in the room (``exited_via``
    = that door; emitted with its ``lost`` event), or any track unseen for ``reacquire_s`` (lost for good;
    ``exited_via`` is the door whose zone it was lost in, else None). A track lost before its feet ever
    left the entry zone is not taken to have walked out: at a door people come in together and hide
    each other.
    :meth:`PersonTracker.flush` ends every open track the same way.

Identity is not decided here: a track carries ``identity`` and ``identity_source`` for the handoff unit
to set (:meth:`PersonTracker.track`), and every event copies them as they were when it was emitted.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from processor.stages.persons import PersonDetection

EVENT_KINDS = ("appeared", "lost", "reacquired", "exited")

Box = tuple[float, float, float, float]


@dataclass
class PersonTrack:
    """One Rollcall person track on one room camera."""

    track_id: str
    camera_id: str
    first_pts_s: float
    last_pts_s: float
    box: Box  # last box seen
    entered_via: str | None = None
    identity: str | None = None  # set by others (door handoff, review); never by the tracker
    identity_source: str | None = None
    state: str = "active"  # "active" | "lost" | "exited"
    lost_since_s: float | None = None
    reacquisitions: int = 0
    tracker_ids: list[int] = field(default_factory=list)  # ByteTrack ids that made up this track
    velocity: tuple[float, float] = (0.0, 0.0)  # of the feet, pixels per second (smoothed)
    look: np.ndarray | None = None  # colour signature of the torso (hue-saturation histogram), smoothed
    in_room: bool = False  # seen with the feet outside every entry zone at least once
    # other tracks whose box touched this one's, and the last stream time they did (people who walk
    # past or behind each other: where ByteTrack's boxes may have swapped)
    contacts: dict[str, float] = field(default_factory=dict)

    @property
    def foot(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, self.box[3]


@dataclass(frozen=True)
class TrackEvent:
    kind: str  # one of EVENT_KINDS
    camera_id: str
    track_id: str
    pts_s: float  # stream time of the frame the event was decided on
    box: Box  # the track's box (last one seen for lost / exited)
    entered_via: str | None = None
    exited_via: str | None = None
    last_seen_pts_s: float | None = None
    identity: str | None = None
    identity_source: str | None = None


class PersonTracker:
    """ByteTrack per room camera, turned into Rollcall track events (see the module docstring)."""

    def __init__(self, camera_id: str, fps: float,
                 entry_zones: Mapping[str, Sequence[tuple[float, float]]] | None = None, *,
                 lost_after_s: float = 2.0, reacquire_s: float = 5.0, reacquire_heights: float = 0.6,
                 track_activation_threshold: float = 0.45, high_conf_det_threshold: float = 0.5,
                 minimum_consecutive_frames: int = 2, minimum_iou_threshold: float = 0.1,
                 backdate_s: float = 1.5, max_look_distance: float = 0.65,
                 swap_window_s: float = 4.0, swap_margin: float = 0.3):
        import supervision as sv
        from trackers import ByteTrackTracker

        if reacquire_s < lost_after_s:
            raise ValueError("reacquire_s must be at least lost_after_s")
        self.camera_id = camera_id
        self.fps = float(fps)
        self.lost_after_s = float(lost_after_s)
        self.reacquire_s = float(reacquire_s)
        self.reacquire_heights = float(reacquire_heights)
        self.run_id = uuid.uuid4().hex[:8]
        self._zones = {door: sv.PolygonZone(np.round(np.asarray(poly, np.float64)).astype(np.int64),
                                            triggering_anchors=(sv.Position.BOTTOM_CENTER,))
                       for door, poly in (entry_zones or {}).items()}
        self._tracker = ByteTrackTracker(
            # trackers counts the buffer in frames of a 30 fps reference whatever frame_rate is
            # (its time budget is lost_track_buffer / 30 s): scale our seconds by 30, not by our fps.
            lost_track_buffer=max(1, int(round(self.lost_after_s * 30.0))),
            frame_rate=self.fps,
            track_activation_threshold=track_activation_threshold,
            minimum_consecutive_frames=minimum_consecutive_frames,
            minimum_iou_threshold=minimum_iou_threshold,
            high_conf_det_threshold=high_conf_det_threshold,
        )
        self.backdate_s = float(backdate_s)
        self.activation_threshold = float(track_activation_threshold)
        self.max_look_distance = float(max_look_distance)
        self.swap_window_s = float(swap_window_s)
        self.swap_margin = float(swap_margin)
        self._image: np.ndarray | None = None
        self._given_looks: dict | None = None
        self._unconfirmed: list[tuple[float, Box, str]] = []  # (pts, box, door) of unconfirmed detections in a zone
        self._counter = 0
        self._tracks: dict[str, PersonTrack] = {}  # open tracks (active or lost) by track_id
        self._by_tracker_id: dict[int, str] = {}  # ByteTrack id -> track_id (the track's current id only)
        self.tracks_started = 0
        self.reacquired = 0
        self.silent_continuations = 0  # ByteTrack id switches stitched before the track was declared lost
        self.swaps_undone = 0  # two tracks' boxes given back to each other after people walked past each other

    # ------------------------------------------------------------------------------------------ api

    def track(self, track_id: str) -> PersonTrack | None:
        return self._tracks.get(track_id)

    @property
    def open_tracks(self) -> list[PersonTrack]:
        return list(self._tracks.values())

    def zone_of(self, boxes: np.ndarray) -> list[str | None]:
        """The door whose entry zone holds each box's bottom centre (first match), else None."""
        import supervision as sv

        result: list[str | None] = [None] * len(boxes)
        if not len(boxes) or not self._zones:
            return result
        dets = sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4))
        for door, zone in self._zones.items():
            inside = zone.trigger(dets)
            for i, hit in enumerate(inside):
                if hit and result[i] is None:
                    result[i] = door
        return result

    def update(self, pts_s: float, detections: Sequence[PersonDetection],
               image: np.ndarray | None = None, looks: Sequence[np.ndarray | None] | None = None) -> list[TrackEvent]:
        """Track this frame's detections; the events it decided, in order. With the frame's ``image``
        (BGR), tracks also keep a colour signature, and a lost track is only picked up again by someone
        who looks like it (``max_look_distance``)."""
        import supervision as sv

        self._image = image
        self._given_looks = ({_box_key(d.box): lk for d, lk in zip(detections, looks)} if looks is not None else None)

        if detections:
            dets = sv.Detections(
                xyxy=np.array([d.box for d in detections], dtype=np.float32),
                confidence=np.array([d.score for d in detections], dtype=np.float32),
                class_id=np.zeros(len(detections), dtype=int),
            )
        else:
            dets = sv.Detections.empty()
        tracked = self._tracker.update(dets, timestamp=float(pts_s))
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.empty(0, int)
        all_boxes = np.asarray(tracked.xyxy, np.float64).reshape(-1, 4)
        all_zones = self.zone_of(all_boxes)
        keep = [i for i, t in enumerate(ids) if t is not None and int(t) >= 0]  # -1: not confirmed yet
        pending = [i for i, t in enumerate(ids) if t is None or int(t) < 0]
        self._remember_unconfirmed(pts_s, all_boxes, all_zones, pending)
        boxes = all_boxes[keep]
        tids = [int(ids[i]) for i in keep]
        zones = [all_zones[i] for i in keep]

        # Colour signatures only from boxes nobody else overlaps: a box shared by two people would
        # teach a track the other's look.
        overlaps = _overlap_matrix(boxes, boxes)
        isolated = _isolated(boxes, np.asarray(dets.xyxy, np.float64).reshape(-1, 4))
        looks = [self._look(b) if isolated[j] else None for j, b in enumerate(boxes)]
        events: list[TrackEvent] = []
        seen: set[str] = set()
        new: list[int] = []
        owner: dict[int, PersonTrack] = {}  # box index -> the track it was given this frame
        for j, tid in enumerate(tids):
            track_id = self._by_tracker_id.get(tid)
            if track_id is None or track_id not in self._tracks:
                new.append(j)
                continue
            track = self._tracks[track_id]
            if track_id in seen:  # two ByteTrack ids on one track: keep the first, drop this one's link
                self._by_tracker_id.pop(tid, None)
                new.append(j)
                continue
            events.extend(self._see(track, pts_s, tuple(boxes[j])))
            track.in_room = track.in_room or zones[j] is None
            seen.add(track_id)
            owner[j] = track
        for j in new:
            tid, box = tids[j], tuple(float(v) for v in boxes[j])
            door, first_pts, first_box = zones[j], float(pts_s), box
            if door is None:
                door, first_pts, first_box = self._entered_earlier(box, pts_s)
            look = looks[j]
            previous = None if door is not None else self._reacquire_candidate(box, pts_s, seen, look)
            if previous is not None:
                old = previous.tracker_ids[-1] if previous.tracker_ids else None
                if old is not None and self._by_tracker_id.get(old) == previous.track_id:
                    del self._by_tracker_id[old]
                previous.tracker_ids.append(tid)
                self._by_tracker_id[tid] = previous.track_id
                if previous.state == "active":
                    self.silent_continuations += 1
                events.extend(self._see(previous, pts_s, box))
                previous.in_room = previous.in_room or zones[j] is None
                seen.add(previous.track_id)
                owner[j] = previous
                continue
            self._consume_unconfirmed(box, pts_s)
            self._counter += 1
            self.tracks_started += 1
            track = PersonTrack(track_id=f"{self.camera_id}-{self.run_id}-{self._counter}", camera_id=self.camera_id,
                                first_pts_s=first_pts, last_pts_s=float(pts_s), box=box, entered_via=door,
                                tracker_ids=[tid], look=look, in_room=zones[j] is None)
            self._tracks[track.track_id] = track
            self._by_tracker_id[tid] = track.track_id
            seen.add(track.track_id)
            owner[j] = track
            events.append(dataclasses.replace(self._event("appeared", track, first_pts), box=first_box))
        events.extend(self._pick_up_unconfirmed(pts_s, tracked.confidence, all_boxes, all_zones, pending, seen))
        self._note_contacts(pts_s, overlaps, owner)
        self._undo_swaps(pts_s, boxes, tids, isolated, looks, owner)
        for j, track in owner.items():
            # not while a recent contact leaves it unsure whose box this is: the signature learnt before
            # is what tells the two apart once they stand apart again
            recent = any(pts_s - when <= self.swap_window_s for when in track.contacts.values())
            if looks[j] is not None and not recent:
                track.look = looks[j] if track.look is None else 0.8 * track.look + 0.2 * looks[j]
        events.extend(self._age(pts_s, seen))
        return events

    def flush(self, pts_s: float) -> list[TrackEvent]:
        """End every open track (the camera stopped or the processor is shutting down)."""
        events = []
        for track in list(self._tracks.values()):
            if track.state == "active":
                track.state, track.lost_since_s = "lost", float(pts_s)
                events.append(self._event("lost", track, pts_s))
            events.append(self._exit(track, pts_s, self.zone_of(np.array([track.box]))[0]))
        return events

    # ------------------------------------------------------------------------------------- internals

    def _look(self, box) -> np.ndarray | None:
        if self._given_looks is not None:
            return self._given_looks.get(_box_key(box))
        return None if self._image is None else torso_look(self._image, box)

    def _look_distance(self, track: PersonTrack, look: np.ndarray | None) -> float:
        import cv2

        if look is None or track.look is None:
            return 0.0  # nothing to compare: position decides
        return float(cv2.compareHist(track.look, look, cv2.HISTCMP_BHATTACHARYYA))

    def _see(self, track: PersonTrack, pts_s: float, box: Box) -> list[TrackEvent]:
        dt = float(pts_s) - track.last_pts_s
        if 0 < dt <= 1.0:  # feet velocity, smoothed; across a longer gap it says little
            (x0, y0), x1, y1 = track.foot, (box[0] + box[2]) / 2.0, box[3]
            vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
            track.velocity = (0.5 * track.velocity[0] + 0.5 * vx, 0.5 * track.velocity[1] + 0.5 * vy)
        track.box = tuple(float(v) for v in box)
        track.last_pts_s = float(pts_s)
        if track.state == "lost":
            track.state, track.lost_since_s = "active", None
            track.reacquisitions += 1
            self.reacquired += 1
            return [self._event("reacquired", track, pts_s)]
        return []

    def _pick_up_unconfirmed(self, pts_s: float, confidence, all_boxes: np.ndarray, all_zones: list,
                             pending: list[int], seen: set[str]) -> list[TrackEvent]:
        """A confident detection ByteTrack has not confirmed yet (at low analysis rates a brisk walker's
        boxes do not overlap from one frame to the next, so it never is) continues an unseen track it is
        within reach of, outside the entry zones."""
        events: list[TrackEvent] = []
        if confidence is None:
            return events
        for i in pending:
            if float(confidence[i]) < self.activation_threshold or all_zones[i] is not None:
                continue
            box = tuple(float(v) for v in all_boxes[i])
            previous = self._reacquire_candidate(box, pts_s, seen, self._look(box))
            if previous is not None:
                events.extend(self._see(previous, pts_s, box))
                previous.in_room = True
                seen.add(previous.track_id)
        return events

    def _remember_unconfirmed(self, pts_s: float, all_boxes: np.ndarray, all_zones: list, pending: list[int]) -> None:
        self._unconfirmed = [u for u in self._unconfirmed if pts_s - u[0] <= self.backdate_s]
        for i in pending:
            if all_zones[i] is not None:
                self._unconfirmed.append((float(pts_s), tuple(float(v) for v in all_boxes[i]), all_zones[i]))

    def _entered_earlier(self, box: Box, pts_s: float) -> tuple[str | None, float, Box]:
        """The door, time and box of the earliest unconfirmed in-zone sighting this new track continues."""
        for seen_pts, seen_box, door in sorted(self._unconfirmed):
            if seen_pts < pts_s and self._walkable(seen_pts, seen_box, pts_s, box):
                return door, seen_pts, seen_box
        return None, float(pts_s), box

    @staticmethod
    def _walkable(seen_pts: float, seen_box: Box, pts_s: float, box: Box) -> bool:
        """Could feet at ``seen_box`` be at ``box`` by now? Half a box height, plus a brisk walk (a box
        height a second) for the time since: at low analysis rates ByteTrack's IoU misses a walker's
        second sighting and confirms only the third."""
        reach = (box[3] - box[1]) * (0.5 + 1.0 * abs(pts_s - seen_pts))
        return float(np.hypot((box[0] + box[2] - seen_box[0] - seen_box[2]) / 2.0, box[3] - seen_box[3])) <= reach

    def _consume_unconfirmed(self, box: Box, pts_s: float) -> None:
        """A new track's own earlier sightings are nobody else's way in."""
        self._unconfirmed = [u for u in self._unconfirmed if not self._walkable(u[0], u[1], pts_s, box)]

    def _reacquire_candidate(self, box: Box, pts_s: float, seen: set[str],
                             look: np.ndarray | None = None) -> PersonTrack | None:
        fx, fy = (box[0] + box[2]) / 2.0, box[3]
        height = box[3] - box[1]
        best, best_d = None, float("inf")
        for track in self._tracks.values():
            if track.track_id in seen or track.last_pts_s >= pts_s or pts_s - track.last_pts_s > self.reacquire_s:
                continue
            track_height = max(1.0, track.box[3] - track.box[1])
            if not 1 / 1.4 <= height / track_height <= 1.4:  # someone nearer or farther: not the same person
                continue
            # Nearest to where the feet were or to where they were heading (someone who walked behind
            # another person comes out further along their way); the prediction is capped at 1.5 s.
            tx, ty = track.foot
            ahead = min(pts_s - track.last_pts_s, 1.5)
            px, py = tx + track.velocity[0] * ahead, ty + track.velocity[1] * ahead
            d = min(float(np.hypot(fx - tx, fy - ty)), float(np.hypot(fx - px, fy - py)))
            # the farther the prediction reaches, the less sure it is: widen the reach with it
            reach = self.reacquire_heights * track_height + 0.3 * float(np.hypot(*track.velocity)) * ahead
            nearness = d / reach  # <= 1: within reach; the smallest wins
            # someone who vanished while touching another person was hidden behind them: they come
            # out next to wherever that person is now (within a box height)
            for other_id, when in track.contacts.items():
                other = self._tracks.get(other_id)
                if other is not None and other_id in seen and when >= track.last_pts_s - 0.5:
                    ox, oy = other.foot
                    nearness = min(nearness, float(np.hypot(fx - ox, fy - oy)) / track_height)
            if nearness <= 1.0 and nearness < best_d and self._look_distance(track, look) <= self.max_look_distance:
                best, best_d = track, nearness
        return best

    def _note_contacts(self, pts_s: float, overlaps: np.ndarray, owner: dict[int, PersonTrack]) -> None:
        for ja, jb in zip(*np.nonzero(np.triu(overlaps, k=1) > 0.0)):
            ta, tb = owner.get(int(ja)), owner.get(int(jb))
            if ta is not None and tb is not None:
                ta.contacts[tb.track_id] = tb.contacts[ta.track_id] = float(pts_s)

    def _undo_swaps(self, pts_s: float, boxes: np.ndarray, tids: list[int], isolated: list[bool],
                    looks: list, owner: dict[int, PersonTrack]) -> None:
        """Two tracks that touched in the last ``swap_window_s`` and now stand apart: if each looks
        clearly more like the other's box, ByteTrack swapped them while they overlapped (two people
        walking past each other): give each track its own person back."""
        by_track = {t.track_id: j for j, t in owner.items() if isolated[j] and looks[j] is not None}
        done: set[str] = set()
        for track_id, j in by_track.items():
            track = owner[j]
            if track_id in done:
                continue
            for other_id, when in list(track.contacts.items()):
                k = by_track.get(other_id)
                if k is None or other_id in done or pts_s - when > self.swap_window_s:
                    continue
                other = owner[k]
                if track.look is None and other.look is None:
                    continue
                # a track without a signature yet (it came in touching the other) adds nothing either way
                kept = self._look_distance(track, looks[j]) + self._look_distance(other, looks[k])
                swapped = self._look_distance(track, looks[k]) + self._look_distance(other, looks[j])
                if swapped + self.swap_margin < kept:
                    self._swap(track, other, j, k, boxes, tids, owner)
                    done.update((track_id, other_id))
                    break

    def _swap(self, a: PersonTrack, b: PersonTrack, j: int, k: int, boxes: np.ndarray, tids: list[int],
              owner: dict[int, PersonTrack]) -> None:
        """Track ``a`` (box ``j`` this frame) takes box ``k`` and its ByteTrack id from ``b``, and vice versa."""
        a.box, b.box = tuple(float(v) for v in boxes[k]), tuple(float(v) for v in boxes[j])
        tid_a, tid_b = tids[j], tids[k]
        a.velocity, b.velocity = b.velocity, a.velocity
        for track, old, new in ((a, tid_a, tid_b), (b, tid_b, tid_a)):
            if old in track.tracker_ids:
                track.tracker_ids.remove(old)
            track.tracker_ids.append(new)
            self._by_tracker_id[new] = track.track_id
        owner[j], owner[k] = b, a
        self.swaps_undone += 1

    def _age(self, pts_s: float, seen: set[str]) -> list[TrackEvent]:
        events: list[TrackEvent] = []
        # contacts older than any use of them (swap checks, looking for someone hidden behind another)
        forget_before = pts_s - max(self.swap_window_s, self.reacquire_s) - 0.5
        for track in list(self._tracks.values()):
            if track.contacts and min(track.contacts.values()) < forget_before:
                track.contacts = {k: v for k, v in track.contacts.items() if v >= forget_before}
            if track.track_id in seen:
                continue
            unseen = pts_s - track.last_pts_s
            if track.state == "active" and unseen >= self.lost_after_s:
                track.state, track.lost_since_s = "lost", float(pts_s)
                events.append(self._event("lost", track, pts_s))
                door = self.zone_of(np.array([track.box]))[0]
                # walked out through a door; someone lost before ever leaving the entry zone was more
                # likely hidden by whoever came in with them, so they stay lost (and can be picked up)
                if door is not None and track.in_room:
                    events.append(self._exit(track, pts_s, door))
                    continue
            if track.state == "lost" and unseen > self.reacquire_s:
                events.append(self._exit(track, pts_s, self.zone_of(np.array([track.box]))[0]))
        return events

    def _exit(self, track: PersonTrack, pts_s: float, door: str | None) -> TrackEvent:
        track.state = "exited"
        self._tracks.pop(track.track_id, None)
        for tid in track.tracker_ids:
            if self._by_tracker_id.get(tid) == track.track_id:
                del self._by_tracker_id[tid]
        return self._event("exited", track, pts_s, exited_via=door)

    def _event(self, kind: str, track: PersonTrack, pts_s: float, exited_via: str | None = None) -> TrackEvent:
        return TrackEvent(kind=kind, camera_id=self.camera_id, track_id=track.track_id, pts_s=float(pts_s),
                          box=track.box, entered_via=track.entered_via, exited_via=exited_via,
                          last_seen_pts_s=track.last_pts_s, identity=track.identity,
                          identity_source=track.identity_source)


def _box_key(box) -> tuple[int, ...]:
    return tuple(int(round(float(v) * 2)) for v in box)


def torso_look(image: np.ndarray, box) -> np.ndarray | None:
    """Hue-saturation histogram of the torso (the middle of the box), or None when the box is too small."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    top, bottom = int(max(0, y1 + 0.15 * h)), int(min(image.shape[0], y1 + 0.6 * h))
    left, right = int(max(0, x1 + 0.25 * w)), int(min(image.shape[1], x2 - 0.25 * w))
    if bottom - top < 4 or right - left < 4:
        return None
    hsv = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


def _overlap_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area for every pair of boxes (rows ``a``, columns ``b``; 1.0:
    one box inside the other, 0.0: apart)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def _isolated(boxes: np.ndarray, all_boxes: np.ndarray, limit: float = 0.05) -> list[bool]:
    """For each tracked box: no other detection of the frame (tracked or not) covers more than ``limit``
    of it or of itself."""
    overlaps = _overlap_matrix(boxes, all_boxes)
    if overlaps.size:
        itself = np.all(np.abs(boxes[:, None, :] - all_boxes[None, :, :]) <= 1.0, axis=2)  # its own detection
        overlaps[itself] = 0.0
    return [bool(row.max(initial=0.0) <= limit) for row in overlaps]
