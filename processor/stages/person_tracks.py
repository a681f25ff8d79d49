"""Person tracks on a room camera: who appeared (and through which door), who was lost, who left.

One :class:`PersonTracker` per room camera. Detections (:class:`processor.stages.persons.PersonDetection`)
are associated frame to frame by a tracker of the ``trackers`` library: ByteTrack, or as options BoT-SORT
(without camera motion compensation, ``association="botsort"``) and OC-SORT (``"ocsort"``); all are
Kalman-filtered and fed each frame's stream time, so a gap is predicted over in time, not counted in
frames. Their box similarity is :class:`~processor.stages.track_association.ReachSimilarity`: IoU, and
where the boxes no longer overlap, how near the feet are in box heights against how far someone walks in
the time since the last analysed frame (half that for a track whose feet have not moved for 1.5 s outside
the entry zones: someone seated, whom a walker passing in front hides; with a walk's reach the seated
track took the walker or the next person to sit down beside them), lowered when the torso looks differ
(down to a tenth for clearly different looks). A track missed in the last ``seen_reach_frames`` analysed
frames is also near where it was last seen, over the whole time unseen, for a detection that looks like it
(the library predicts it on in a straight line; someone who turned while hidden is not there).
A box that boxes scored above it cover almost whole (a box over two people) is only offered to the tracks
no better box took, and never starts a track.
With both, class-rush at 3 fps went from IDF1 0.943 to 0.959 and from 34 to 19 ID switches over 6
replays. A camera that gets one frame a second (a loaded machine) sees a walker a box width or more
further on each time: IoU alone starts a new track at every frame (C-BIoU's buffered IoU did not reach far
enough either). The choice was measured with ``rollcall bench tracking``
(IDF1 against the renderer's ground truth at 4, 2 and 1 fps). The library keeps predicting an unmatched
track for ``library_buffer`` x ``lost_after_s``, so someone hidden a moment keeps their library id.

On top of the library's ids the tracker keeps Rollcall tracks with a stable ``track_id``
(``<camera>-<run id>-<counter>``; the random run id keeps ids unique across processor restarts) and turns
their life into :class:`TrackEvent` s:

``appeared``
    A new library id (confirmed at its second sighting) that does not continue an earlier track.
    ``entered_via`` is the door whose entry zone (``supervision.PolygonZone``, anchor ``BOTTOM_CENTER``)
    held the feet at the track's first sighting (the unconfirmed sighting it continues), or the door its
    path leads back to: the feet's way from the first to the confirming sighting, followed backwards for
    ``backdate_s`` (longer, up to twice that, when no frame was analysed for longer before the first
    sighting), passes within ``door_reach_heights`` box heights of that door's zone (at one frame a
    second a walker is often first seen already past the zone, turning into the aisle). The event
    carries that earlier time and the first box. Else ``None``: someone first seen in the room.
``lost``
    An active track not seen for ``lost_after_s`` of stream time in at least ``min_missed_frames``
    analysed frames (frames never analysed say nothing about who is there).
``reacquired``
    A new library id whose first feet are near where a track of similar height (within a factor 1.6:
    someone who sits down is a third shorter),
    unseen for less than ``reacquire_s``, was or was heading (its smoothed velocity, up to 1.5 s ahead;
    within ``reacquire_heights`` box heights, the reach widening with the prediction), and outside the
    entry zones: it continues that track (same ``track_id``). Given the frame (or precomputed looks), a
    track keeps a colour signature of the torso (hue-saturation histogram, learnt only from boxes no
    other detection overlaps); a clearly different-looking person (Bhattacharyya distance above
    ``max_look_distance``) continues it only standing where it was (``still_nearness``: a torso crop
    changes with the pose). A track not yet declared lost is continued silently (the library's own id
    switch, not an event). Beyond that reach, a lost track is continued on its look alone (``walked_on``):
    someone hidden in a class-start crowd for seconds comes out where they walked to, further than any
    prediction reaches; the look must be clearly alike (Bhattacharyya distance up to 0.3; measured on the
    renderer's people: the same person's median 0.16, different people's 5th percentile 0.45-0.65),
    better by 0.15 than any other lost track's that could have walked there, and within a brisk walk
    (``walk_heights_per_s`` box heights a second). A track that was never seen alone (lost in the crowd
    it came in with) is compared by the look of its last shared box.
``exited``
    A lost track whose last bottom centre was in an entry zone after it had been in the room (``exited_via``
    = that door; emitted with its ``lost`` event), or any track unseen for ``reacquire_s`` (lost for good;
    ``exited_via`` is the door whose zone it was lost in, else None). A track lost before its feet ever
    left the entry zone, or lost at the door within ``reacquire_s`` of coming in, is not taken to have
    walked out: at a door people come in together and hide each other (it exits after ``reacquire_s``
    unseen if nobody picks it up). :meth:`PersonTracker.flush` ends every open track the same way.

Identity is not decided here: a track carries ``identity`` and ``identity_source`` for the handoff unit
to set (:meth:`PersonTracker.track`), and every event copies them as they were when it was emitted.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment

from processor.stages.entry_zones import EntryZones
from processor.stages.person_track_parts import (Box, PersonTrack, TrackEvent, box_key, foot, isolated, reach_ratio,
                                                 torso_look)
from processor.stages.persons import PersonDetection
from processor.stages.track_association import ASSOCIATIONS, ReachSimilarity, demote_covered, library_tracker
from processor.stages.track_reacquire import ReacquireRules
from processor.stages.track_resume import ResumeRules, resume_pairs

__all__ = ["PersonTrack", "PersonTracker", "TrackEvent"]  # the track and its events are person_track_parts'


class PersonTracker:
    """A ``trackers`` tracker per room camera, turned into Rollcall track events (see the module docstring)."""

    def __init__(self, camera_id: str, fps: float,
                 entry_zones: Mapping[str, Sequence[tuple[float, float]]] | None = None, *,
                 lost_after_s: float = 2.0, reacquire_s: float = 5.0, reacquire_heights: float = 0.6,
                 association: str = "bytetrack", track_activation_threshold: float = 0.45,
                 high_conf_det_threshold: float = 0.5, minimum_similarity: float = 0.1,
                 backdate_s: float = 1.5, max_look_distance: float = 0.65,
                 library_buffer: float = 2.5, min_missed_frames: int = 2, still_nearness: float = 0.25,
                 door_reach_heights: float = 0.35, look_weight: float = 2.0, walk_heights_per_s: float = 1.0,
                 walk_on_look_distance: float = 0.3, walk_on_margin: float = 0.15, still_after_s: float = 1.5,
                 still_radius: float = 0.25, still_mobility: float = 0.5, look_floor: float = 0.1,
                 height_factor: float = 1.6, seen_reach_frames: int = 2, covered_demote_share: float = 0.8):
        if reacquire_s < lost_after_s:
            raise ValueError("reacquire_s must be at least lost_after_s")
        if association not in ASSOCIATIONS:
            raise ValueError(f"association must be one of {ASSOCIATIONS}")
        self.camera_id = camera_id
        self.fps = float(fps)
        self.lost_after_s = float(lost_after_s)
        self.reacquire_s = float(reacquire_s)
        self.min_missed_frames = int(min_missed_frames)
        self.still_radius = float(still_radius)
        self.still_after_s = float(still_after_s)
        self.still_mobility = float(still_mobility)
        # an active track missed in up to this many analysed frames is also matched near where it was seen
        # (ReachSimilarity, observed); 0: off. Without a bound, tracks long unseen flickered between people.
        self.seen_reach_frames = int(seen_reach_frames)
        self.backdate_s = float(backdate_s)
        self.door_reach_heights = float(door_reach_heights)
        self.rules = ReacquireRules(
            reacquire_s=self.reacquire_s, reacquire_heights=float(reacquire_heights),
            max_look_distance=float(max_look_distance), still_nearness=float(still_nearness),
            walk_heights_per_s=float(walk_heights_per_s), walk_on_look_distance=float(walk_on_look_distance),
            walk_on_margin=float(walk_on_margin), height_factor=float(height_factor))
        self.run_id = uuid.uuid4().hex[:8]
        self.high_conf_det_threshold = float(high_conf_det_threshold)
        # a detection the boxes scored above it cover for at least this share goes to the library's second
        # round (track_association.demote_covered); 0: off
        self.covered_demote_share = float(covered_demote_share)
        self.set_entry_zones(entry_zones or {})
        self.similarity = ReachSimilarity(look_weight=look_weight, look_floor=look_floor)
        # trackers counts the lost-track buffer in frames of a 30 fps reference whatever frame_rate is (its
        # time budget is lost_track_buffer / 30 s): scale our seconds by 30, not by our fps.
        buffer = max(1, int(round(self.lost_after_s * 30.0 * library_buffer)))
        self._tracker = library_tracker(association, buffer, self.fps, self.similarity,
                                        track_activation_threshold=track_activation_threshold,
                                        high_conf_det_threshold=high_conf_det_threshold,
                                        minimum_similarity=minimum_similarity)
        self._last_pts: float | None = None
        self._frame_times: deque[float] = deque(maxlen=64)  # stream times of the last analysed frames
        self._sightings: list[tuple[float, Box]] = []  # (pts, box) of unconfirmed detections, last backdate_s
        self._counter = 0
        self._tracks: dict[str, PersonTrack] = {}  # open tracks (active or lost) by track_id
        self._by_tracker_id: dict[int, str] = {}  # library id -> track_id (the track's current id only)
        self.tracks_started = 0
        self.reacquired = 0
        self.walked_on = 0  # lost tracks continued on their look alone, beyond the prediction's reach
        self.silent_continuations = 0  # library id switches stitched before the track was declared lost
        self.coasted = 0  # frames coasted (see coast)
        self._resumed_gap: dict[str, float] = {}  # checkpointed track -> seconds unseen before it was resumed
        self.resume_rules = ResumeRules(walk_heights_per_s=self.rules.walk_heights_per_s,
                                        max_look_distance=self.rules.walk_on_look_distance,
                                        height_factor=self.rules.height_factor)

    # ------------------------------------------------------------------------------------------ api

    def track(self, track_id: str) -> PersonTrack | None:
        return self._tracks.get(track_id)

    @property
    def open_tracks(self) -> list[PersonTrack]:
        return list(self._tracks.values())

    def set_entry_zones(self, entry_zones: Mapping[str, Sequence[tuple[float, float]]]) -> None:
        """The doors' entry zones on this camera (at start, and when an admin redraws one: tracks stay)."""
        self._entry = EntryZones(entry_zones, door_reach_heights=self.door_reach_heights, backdate_s=self.backdate_s)

    @property
    def entry_zones(self) -> dict[str, list[tuple[float, ...]]]:
        return self._entry.polygons

    def zone_of(self, boxes: np.ndarray) -> list[str | None]:
        """The door whose entry zone holds each box's bottom centre (first match), else None."""
        return self._entry.zone_of(boxes)

    def update(self, pts_s: float, detections: Sequence[PersonDetection], image: np.ndarray | None = None,
               looks: Sequence[np.ndarray | None] | None = None) -> list[TrackEvent]:
        """Track this frame's detections; the events it decided, in order. Torso colour signatures come
        from ``looks`` (one per detection) or the frame's ``image`` (BGR); without either, position alone
        decides who continues a lost track."""
        pts_s = float(pts_s)
        if looks is None:
            looks = [torso_look(image, d.box) if image is not None else None for d in detections]
        ids, det_ix, boxes, isolated = self._associate(pts_s, detections, looks)
        zones = self.zone_of(boxes)
        events: list[TrackEvent] = []
        seen: set[str] = set()
        confirmed = [j for j in range(len(ids)) if ids[j] >= 0]
        # tracks the library already follows first, so a new id never takes a track seen in this frame
        confirmed.sort(key=lambda j: self._by_tracker_id.get(ids[j]) is None)
        new = [j for j in confirmed if self._by_tracker_id.get(ids[j]) not in self._tracks]
        firsts = dict(zip(new, self._first_sightings([tuple(float(v) for v in boxes[j]) for j in new], pts_s)))
        resumed = self._resumed_pairs(new, boxes, [looks[det_ix[j]] if isolated[j] else None for j in range(len(ids))],
                                      pts_s)
        owned: list[tuple[int, PersonTrack, np.ndarray | None]] = []  # (box index, its track, its look)
        for j in confirmed:
            look = looks[det_ix[j]] if isolated[j] else None  # a shared box would teach a track two looks
            track = self._owner(ids[j], tuple(float(v) for v in boxes[j]), pts_s, zones[j], look, seen,
                                firsts.get(j), events, resumed.get(j))
            seen.add(track.track_id)
            owned.append((j, track, look))
            if look is None and track.look is None and det_ix[j] < len(looks) and looks[det_ix[j]] is not None:
                track.crowd_look = looks[det_ix[j]]  # never seen alone: the best there is (see walked_on)
        for j, track, look in owned:
            events.extend(self._see(track, pts_s, tuple(float(v) for v in boxes[j]), zones[j], look))
        self._sightings = [s for s in self._sightings if pts_s - s[0] <= self.backdate_s]
        self._sightings += [(pts_s, tuple(float(v) for v in boxes[j])) for j in range(len(ids)) if ids[j] < 0]
        events.extend(self._age(pts_s, seen))
        return events

    def coast(self, pts_s: float) -> None:
        """A frame the motion gate (processor.stages.motion) found unchanged since the last analysed one:
        the detector would have said the same, so the tracks seen then are seen again where they were. The
        ones unseen then are unseen in this frame too: they age toward ``lost_after_s`` (and a lost one
        toward its exit) as in an analysed frame; only the analysed frames count toward
        ``min_missed_frames``, and the lost event waits for the next one. (Not ageing them kept a person
        hidden behind another for seconds an active track that never was lost, so never reacquired.)
        The library's tracker is not fed: its Kalman filter predicts over the gap in time, and for people
        who did not move that is where they were."""
        pts_s = float(pts_s)
        if self._last_pts is None or pts_s <= self._last_pts:
            return
        for track in self._tracks.values():
            if track.state == "active" and track.missed == 0:
                track.last_pts_s = pts_s
        # the next analysed frame's reach counts from here: whatever moved, moved after this frame
        self._last_pts = pts_s
        self._frame_times.append(pts_s)  # the analysis looked: nobody walked through an entry zone
        self.coasted += 1

    def _associate(self, pts_s: float, detections: Sequence[PersonDetection], looks: Sequence) \
            -> tuple[list[int], list[int], np.ndarray, list[bool]]:
        """The library's association of this frame: per returned box its library id (-1: not confirmed),
        the index of its detection, the boxes, and whether each stands alone (no other detection on it)."""
        xyxy = np.array([d.box for d in detections], np.float32).reshape(-1, 4)
        confidence, demoted = demote_covered(xyxy, np.array([d.score for d in detections], np.float32),
                                             self.high_conf_det_threshold, self.covered_demote_share)
        dets = sv.Detections(
            xyxy=xyxy,
            confidence=confidence,
            class_id=np.zeros(len(detections), int),
            data={"det": np.arange(len(detections))},
        ) if len(detections) else sv.Detections.empty()
        weak = {box_key(b) for b in xyxy[demoted]}
        self.similarity.demoted = lambda boxes: [box_key(b) in weak for b in boxes]
        det_looks = {box_key(d.box): look for d, look in zip(detections, looks)}
        # a track never seen alone is compared by its crowd look (its last shared box's): with none, a still
        # track made of a duplicate box beside a seat lost nothing by looking unlike the walker who sat down
        # there, and took him from his own track (class-rush, int8, 2 fps; traced in the test suite). Offline
        # (bench tracking, 3 scenarios, 6 replays a rate) it helped at every rate: fp32 entries at 1 fps
        # 118 -> 126 of 156, ID switches 52 -> 29; splits at 4 fps 2 -> 0.
        self.similarity.looks = lambda tracks, boxes: ([None if t is None else t.look if t.look is not None
                                                        else t.crowd_look for t in self._library_tracks(tracks)],
                                                       [det_looks.get(box_key(b)) for b in boxes])
        self.similarity.mobility = lambda tracks: [self._mobility(t, pts_s) for t in self._library_tracks(tracks)]
        self.similarity.observed = lambda tracks: [self._where_seen(t, pts_s) for t in self._library_tracks(tracks)]
        self.similarity.elapsed_s = pts_s - self._last_pts if self._last_pts is not None else 1.0 / self.fps
        self._last_pts = pts_s if self._last_pts is None else max(self._last_pts, pts_s)
        tracked = self._tracker.update(dets, timestamp=pts_s)
        self._frame_times.append(pts_s)
        ids = [int(t) for t in tracked.tracker_id] if tracked.tracker_id is not None else []
        det_ix = [int(i) for i in tracked.data["det"]] if len(tracked) else []
        boxes = np.asarray(tracked.xyxy, np.float64).reshape(-1, 4)
        return ids, det_ix, boxes, isolated(boxes, np.asarray(dets.xyxy, np.float64).reshape(-1, 4))

    def flush(self, pts_s: float) -> list[TrackEvent]:
        """End every open track (the camera stopped or the processor is shutting down)."""
        events = []
        for track in list(self._tracks.values()):
            if track.state == "active":
                track.state, track.lost_since_s = "lost", float(pts_s)
                events.append(self._event("lost", track, pts_s))
            events.append(self._exit(track, pts_s, self.zone_of(np.array([track.box]))[0]))
        return events

    def resume(self, tracks: Sequence[tuple[str, Box, np.ndarray | None, str | None, float]], pts_s: float) -> None:
        """Tracks another processor had on this camera (its checkpoint: track id, box, look, door it came
        in through, seconds since it was last seen), taken up as lost a moment before ``pts_s``: a new track
        paired with one (processor.stages.track_resume, the gap widening the reach) continues it, id and
        identity; the others exit after ``reacquire_s``."""
        for track_id, box, look, entered_via, gap_s in tracks:
            if track_id in self._tracks:
                continue
            before = float(pts_s) - 1e-3  # unseen for a moment: only lost tracks can be reacquired
            self._tracks[track_id] = PersonTrack(
                track_id=track_id, camera_id=self.camera_id, first_pts_s=before, last_pts_s=before,
                box=tuple(float(v) for v in box), entered_via=entered_via, state="lost", lost_since_s=before,
                look=look, in_room=True)
            self._resumed_gap[track_id] = max(0.0, float(gap_s))

    def _resumed_pairs(self, new: list[int], boxes: np.ndarray, looks: Sequence, pts_s: float) -> dict[int, PersonTrack]:
        """New library ids (box indices) -> the checkpointed tracks they continue (processor.stages.track_resume)."""
        waiting = [self._tracks[t] for t in self._resumed_gap if t in self._tracks and self._tracks[t].state == "lost"]
        self._resumed_gap = {t.track_id: self._resumed_gap[t.track_id] for t in waiting}
        if not waiting or not new:
            return {}
        pairs = resume_pairs(
            [(t.box, t.look, self._resumed_gap[t.track_id] + pts_s - t.last_pts_s) for t in waiting],
            [(tuple(float(v) for v in boxes[j]), looks[j]) for j in new], self.resume_rules)
        return {new[i]: waiting[k] for i, k in pairs.items()}

    def rename(self, old: str, new: str) -> PersonTrack | None:
        """Give an open track another id (a standby adopting the id its owner published); None if unknown
        or the new id is taken."""
        track = self._tracks.get(old)
        if track is None or new in self._tracks:
            return None
        del self._tracks[old]
        track.track_id = new
        self._tracks[new] = track
        for tid, track_id in self._by_tracker_id.items():
            if track_id == old:
                self._by_tracker_id[tid] = new
        if old in self._resumed_gap:
            self._resumed_gap[new] = self._resumed_gap.pop(old)
        return track

    @property
    def resuming(self) -> bool:
        """Whether a track taken up from a checkpoint is still waiting to be found."""
        return any(t in self._tracks and self._tracks[t].state == "lost" for t in self._resumed_gap)

    def drop(self) -> list[PersonTrack]:
        """Forget every open track without ending it (the camera moved to another processor, which resumes
        them from the checkpoint); returns them."""
        tracks = list(self._tracks.values())
        self._tracks.clear()
        self._by_tracker_id.clear()
        self._resumed_gap.clear()
        return tracks

    # ------------------------------------------------------------------------------------- internals

    def _owner(self, tid: int, box: Box, pts_s: float, zone: str | None, look, seen: set[str],
               first: tuple[float, Box] | None, events: list[TrackEvent], resumed: PersonTrack | None = None
               ) -> PersonTrack:
        """The Rollcall track library id ``tid`` belongs to; a new id (first seen at ``first``) continues a
        lost (or unseen) track, or the ``resumed`` one of another processor's checkpoint, or starts one (its
        'appeared' event goes to ``events``)."""
        track_id = self._by_tracker_id.get(tid)
        if track_id in self._tracks and track_id not in seen:
            return self._tracks[track_id]
        first_pts, first_box = first or (pts_s, box)
        door = self.zone_of(np.array([first_box]))[0] or zone
        entered_pts = first_pts
        if door is None and resumed is None:
            door, entered_pts = self._entry.door_behind(self._frame_times, first_pts, first_box, pts_s, box)
        previous = resumed or (None if door is not None else self._reacquire_candidate(box, pts_s, seen, look))
        if previous is not None:
            if previous.state == "active":
                self.silent_continuations += 1
            previous.tracker_ids.append(tid)
            self._by_tracker_id[tid] = previous.track_id
            return previous
        self._counter += 1
        self.tracks_started += 1
        track = PersonTrack(track_id=f"{self.camera_id}-{self.run_id}-{self._counter}", camera_id=self.camera_id,
                            first_pts_s=entered_pts, last_pts_s=first_pts, box=first_box, entered_via=door,
                            tracker_ids=[tid])
        self._tracks[track.track_id] = track
        self._by_tracker_id[tid] = track.track_id
        events.append(self._event("appeared", track, entered_pts))
        return track

    def _library_tracks(self, predicted: np.ndarray) -> list[PersonTrack | None]:
        """The Rollcall track behind each predicted box of the library's tracklets (None: not one yet)."""
        by_box = {box_key(t.get_state_bbox()): t.tracker_id for t in self._tracker.tracks}
        return [self._tracks.get(self._by_tracker_id.get(by_box.get(box_key(box), -1), "")) for box in predicted]

    def _where_seen(self, track: PersonTrack | None, pts_s: float) -> tuple[Box, float] | None:
        """(box last seen, seconds unseen) of an active track the detector missed in the last
        ``seen_reach_frames`` analysed frames, else None (see ReachSimilarity)."""
        if track is None or track.state != "active" or not 0 < track.missed <= self.seen_reach_frames:
            return None
        return track.box, track.unseen_s(pts_s)

    def _mobility(self, track: PersonTrack | None, pts_s: float) -> float:
        """The share of a walk's reach a track gets: ``still_mobility`` once its feet have stayed within
        ``still_radius`` box heights for ``still_after_s`` outside the entry zones (someone seated), else 1.
        A seated person does not cover half a box height between two frames, but a walker passing in front
        of them hides them and is where they were: with a walk's reach the seated track would take the
        walker (or, a frame later, someone sitting down next to them). One who does get up is lost a moment
        and continued by the reacquisition rules, which keep the identity."""
        if track is None or track.still_since is None or pts_s - track.still_since < self.still_after_s:
            return 1.0
        return self.still_mobility

    def _first_sightings(self, boxes: list[Box], pts_s: float) -> list[tuple[float, Box]]:
        """The unconfirmed sighting each newly confirmed box continues, within a brisk walk: one each,
        nearest overall (people who come in together are told apart by where each was); a box with none is
        its own first sighting. The ones taken are spent. The latest earlier frame's sightings first:
        the library confirms a tracklet at its second consecutive update, so that is where it began; an
        older one only for a box none of those continues. (A reach grows with the time since, so a stale
        sighting two seconds old had looked nearer than the one the tracklet began from: a student just
        in through the door was dated from a stray box in the aisle and lost their entry.)"""
        earlier = [s for s in self._sightings if s[0] < pts_s]
        found = [(pts_s, box) for box in boxes]
        if not boxes or not earlier:
            return found
        latest = max(s[0] for s in earlier)
        open_rows = list(range(len(boxes)))
        for candidates in ([s for s in earlier if s[0] == latest], [s for s in earlier if s[0] < latest]):
            if not open_rows or not candidates:
                continue
            cost = np.array([[reach_ratio(s[0], s[1], pts_s, boxes[r]) for s in candidates] for r in open_rows])
            rows, cols = linear_sum_assignment(np.minimum(cost, 10.0))
            taken = set()
            for r, c in zip(rows, cols):
                if cost[r, c] <= 1.0:
                    found[open_rows[r]] = candidates[c]
                    self._sightings.remove(candidates[c])
                    taken.add(open_rows[r])
            open_rows = [r for r in open_rows if r not in taken]
        return found

    def _see(self, track: PersonTrack, pts_s: float, box: Box, zone: str | None, look) -> list[TrackEvent]:
        dt = float(pts_s) - track.last_pts_s
        if 0 < dt <= 1.5:  # feet velocity, smoothed; across a longer gap it says little
            (x0, y0), (x1, y1) = track.foot, foot(box)
            vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
            track.velocity = (0.5 * track.velocity[0] + 0.5 * vx, 0.5 * track.velocity[1] + 0.5 * vy)
        track.box = tuple(float(v) for v in box)
        track.last_pts_s = float(pts_s)
        track.missed = 0
        feet, height = foot(box), max(1.0, box[3] - box[1])
        if zone is not None:  # at a door people wait for each other and then walk on: never taken as seated
            track.still_at, track.still_since = None, None
        elif track.still_at is None or np.hypot(feet[0] - track.still_at[0], feet[1] - track.still_at[1]) \
                > self.still_radius * height:
            track.still_at, track.still_since = feet, float(pts_s)
        track.in_room = track.in_room or zone is None
        if look is not None:
            track.look = look if track.look is None else 0.8 * track.look + 0.2 * look
        if track.state == "lost":
            track.state, track.lost_since_s = "active", None
            track.reacquisitions += 1
            self.reacquired += 1
            return [self._event("reacquired", track, pts_s)]
        return []

    def _reacquire_candidate(self, box: Box, pts_s: float, seen: set[str],
                             look: np.ndarray | None = None) -> PersonTrack | None:
        track, walked_on = self.rules.candidate(self._tracks.values(), box, pts_s, seen, look)
        self.walked_on += walked_on
        return track

    def _age(self, pts_s: float, seen: set[str]) -> list[TrackEvent]:
        events: list[TrackEvent] = []
        for track in list(self._tracks.values()):
            if track.track_id in seen:
                continue
            track.missed += 1
            unseen = track.unseen_s(pts_s)
            # lost: unseen for lost_after_s in at least min_missed_frames analysed frames (frames that were
            # never analysed say nothing about who is there)
            if track.state == "active" and unseen >= self.lost_after_s and track.missed >= self.min_missed_frames:
                track.state, track.lost_since_s = "lost", float(pts_s)
                events.append(self._event("lost", track, pts_s))
                door = self.zone_of(np.array([track.box]))[0]
                # walked out through a door; someone lost before ever leaving the entry zone, or lost at
                # the door within reacquire_s of coming in, was more likely hidden by whoever came in with
                # them (a class-start crowd), so they stay lost (and can be picked up)
                just_in = track.entered_via is not None and track.last_pts_s - track.first_pts_s < self.reacquire_s
                if door is not None and track.in_room and not just_in:
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
