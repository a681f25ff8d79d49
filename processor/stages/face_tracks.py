"""Face tracks at a door camera: identity is decided per track from several frames, not per frame.

Faces are tracked across frames with ByteTrack (the ``trackers`` library), one tracker per camera even
though detection is batched across cameras. Tracking comes before embedding (``assign`` then ``settle``), so
faces on a track that is already decided are never embedded again. Each track accumulates its embeddings weighted by face
quality; the track is decided once: as soon as it has ``decide_after`` good frames and the gallery
recognises it confidently, or else when the track ends (lost for ``lost_after_s`` of stream time),
known or unknown. One person walking in therefore gives one recognition.

A short passage (a face the detector finds in fewer frames than an early decision needs, or a door short of
CPU) would wait for its track to end, a second after its last face, and miss the one-second delay doors are
held to. So a track whose face has been out of view for ``gone_after_s`` (and at least two analysed frames)
is decided then, on the same frames its end would use, when that decision is a known, live person: the
passage is over and the answer cannot change. An unknown or suspect one still waits for the track's end,
in case the face comes back (turned away a moment) with more to say.

Given the frame image (``settle(..., image=...)``), each track also keeps the clothing descriptor of the
torso below its best face (:func:`processor.appearance.describe_below_face`, recomputed only when the
best face changes), and its decision says on which half of the image that face was (``side``): both go
into the recognition event for the door-to-room handoff.

ByteTrack sometimes splits one passage into two tracks (the face turned away or was missed for a few
frames). The second part, often too short or too turned to be recognised, would end as a second,
unknown recognition of the same person. So with ``fragment_similarity`` set (the gallery's match
threshold), a track that ends unknown is dropped (logged, counted in ``fragments_dropped``) when its
embedding matches a decision this camera made within ``fragment_window_s`` of stream time before the
track began. Likewise a track decided known as the person of such a decision: a decided person at the
door is analysed at its idle rate (2 fps), where three missed detections end the track, and the face
found again starts a new one (under a new ByteTrack key, or the same one); the passage was recognised
already, so the second decision is dropped too. The other way round, ByteTrack may give a decided track's
key to the next person stepping in (its motion model expects the lost face there): a face on a decided
track that cannot be the one last seen on it (half the area, or far away: :func:`_someone_else`) starts a
new track under that key.

With ``liveness`` set, every face of a track (gated or not, with the frame image) also feeds the track's
liveness cues (:mod:`processor.stages.liveness`); an early decision then waits until the cues of
``min_frames`` frames say live (or those of ``clear_frames`` show no picture edge at all), else the track is
decided when it ends; a suspect track's decision gives
nobody's identity (``person_id`` None, ``pictured_person_id`` whom the gallery matched) and is never dropped
as a fragment.

Embeddings are the largest cost per face (~20 ms on a CPU), so an undecided track is embedded on every
good face only until it has ``decide_after`` of them; after that only on a face better than its best so
far, or every ``embed_every``-th good face (:meth:`FaceTracker.wants_embedding`). A stranger's track
that stays in view for 3 s then costs ~12 embeddings instead of ~30, and its mean embedding keeps the
best looks, which carry most of the weight anyway. With ``stranger_below`` set, a track whose mean, once
it has ``decide_after`` embeddings, matches nobody better than that is a *clear stranger*: only its
clearly better faces are embedded (a better look is how a known person's poor first faces would come
right; more faces of the same quality do not move a mean that far from everyone). Measured with `rollcall
bench faces --streams 16` (2026-12-07): visitors' tracks took 189 of 291 door embeddings, 81 of them
every-n-th faces; their means scored at most 0.21 against the gallery, every known track's at least 0.61
(SFace, match threshold 0.40). Embeddings are ~16-25 ms a face on this CPU: five frames' face detection.

A clear answer needs fewer first looks: with ``clear_after`` below ``decide_after``, a track whose mean of its
first ``clear_after`` embeddings is a clear stranger (below ``stranger_below``) or clearly an enrolled person
(``known_above`` or more, the gallery's margin met) has its looks (:meth:`FaceTracker.has_looks`): only its
clearly better faces are embedded after that, and a clearly known one is decided as soon as it is clearly live.
The liveness check wants 12-20 frames of cues whatever the embeddings, so the decision comes no later; what
is saved is the embeddings a door's rush of arrivals spends while room cameras wait for the same cores.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from processor.appearance import Appearance, describe_below_face
from processor.stages.liveness import FaceCues, Liveness, LivenessSettings, LivenessTrack, measure

log = logging.getLogger("rollcall.processor")


@dataclass
class FaceObservation:
    """One detected face in one frame, after the quality gate and (if it passed) the embedder."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float  # detector confidence
    quality: float  # 0..1; 0 when the quality gate rejected the face
    embedding: np.ndarray | None  # L2-normalised; None when gated out
    crop: np.ndarray | None = None  # the aligned crop: embedded when its track wants it; the best one kept for review
    landmarks: np.ndarray | None = None  # (5, 2) in frame pixels, for the liveness cues
    # its liveness cues in this frame, measured off the event loop for faces whose track wants them
    # (FaceTracker.wants_liveness); None: not measured yet (the track measures them itself)
    cues: FaceCues | None = None


@dataclass
class TrackDecision:
    camera_id: str
    track_id: str
    embedding: np.ndarray  # quality-weighted mean of the track's embeddings, L2-normalised
    quality: float  # best face quality seen on the track
    frames: int  # frames whose embeddings went into the decision
    box: tuple[float, float, float, float]  # of the best frame
    frame_size: tuple[int, int]  # width, height
    best_pts_s: float
    first_pts_s: float
    last_pts_s: float
    captured_at: float  # wall clock of the frame that completed the decision (latency start)
    crop: np.ndarray | None
    person_id: str | None = None  # filled by the matcher
    score: float = 0.0
    margin: float = 0.0
    ended: bool = False  # decided because the track ended (not early)
    appearance: Appearance | None = None  # clothing below the best face (None: no image, or out of view)
    side: str | None = None  # "left" / "right": the half of the image the best face was in
    liveness: Liveness | None = None  # None: the check is off
    pictured_person_id: str | None = None  # a suspect track: whom the gallery matched (never its identity)


@dataclass
class _Track:
    track_id: str
    key: int  # ByteTrack's id of it
    first_pts_s: float
    last_pts_s: float
    weighted_sum: np.ndarray | None = None
    weight: float = 0.0
    frames: int = 0  # good faces embedded
    looks: int = 0  # good faces seen (embedded or not)
    best_quality: float = -1.0
    best_box: tuple[float, float, float, float] = (0, 0, 0, 0)
    best_pts_s: float = 0.0
    best_crop: np.ndarray | None = None
    best_appearance: Appearance | None = None
    decided: bool = False
    person_id: str | None = None  # once decided
    last_captured_at: float = 0.0
    decision_embedding: np.ndarray | None = None  # the embedding its decision was made on
    liveness: LivenessTrack | None = None  # cues over the passage (None: the check is off)
    missed: int = 0  # analysed frames since its face was last seen (counted while undecided)
    gone_tried: bool = False  # decided unknown or suspect once its face was gone: waits for its end
    stranger: bool = False  # its mean matched nobody better than FaceTracker.stranger_below (last look)
    clear: bool = False  # its answer was clear (a clear stranger, or clearly known) on its last look
    last_box: tuple[float, float, float, float] = (0, 0, 0, 0)

    def add(self, obs: FaceObservation, pts_s: float, captured_at: float, image: np.ndarray | None = None) -> None:
        self.last_pts_s, self.last_box = pts_s, obs.box
        self.missed, self.gone_tried = 0, False
        self.last_captured_at = captured_at
        if self.liveness is not None and image is not None and not self.decided:
            # every face of the track counts, gated or not: the cues need the whole approach
            cues = obs.cues if obs.cues is not None else measure(image, obs.box, liveness_crop(obs))
            self.liveness.add_cues(cues, obs.landmarks)
        if obs.quality > 0:
            self.looks += 1
        if obs.embedding is None or obs.quality <= 0:
            return
        weighted = obs.embedding.astype(np.float32) * obs.quality
        self.weighted_sum = weighted if self.weighted_sum is None else self.weighted_sum + weighted
        self.weight += obs.quality
        self.frames += 1
        if obs.quality > self.best_quality:
            self.best_quality, self.best_box, self.best_pts_s = obs.quality, obs.box, pts_s
            self.best_crop = obs.crop
            if image is not None:
                # keep the last body seen if this frame cuts it off (a face at the bottom edge)
                self.best_appearance = describe_below_face(image, obs.box) or self.best_appearance

    def mean_embedding(self) -> np.ndarray:
        vector = self.weighted_sum / max(self.weight, 1e-9)
        return vector / max(float(np.linalg.norm(vector)), 1e-9)


@dataclass
class MatchResult:
    person_id: str | None
    score: float
    margin: float


Matcher = Callable[[np.ndarray], MatchResult]  # one embedding (D,) -> match


@dataclass
class FaceTracker:
    """Per-camera face tracks (one instance per door camera)."""

    camera_id: str
    fps: float
    decide_after: int = 5  # good frames before an early (known) decision
    lost_after_s: float = 1.0
    gone_after_s: float | None = 0.4  # face out of view this long: a known, live track is decided (None: off)
    min_frames: int = 2  # a track with fewer good frames never becomes an event
    embed_every: int = 3  # after decide_after embeddings: every n-th good face (and any better one)
    fragment_similarity: float | None = None  # None: never drop a track as a fragment of another
    stranger_below: float | None = None  # a mean matching nobody better: a clear stranger (None: off)
    known_above: float | None = None  # a mean matching a person this well (margin met): clearly known (None: off)
    clear_after: int | None = None  # embeddings after which a clear answer needs no more (None: decide_after)
    fragment_window_s: float = 3.0
    liveness: LivenessSettings | None = None  # None: no liveness check
    _tracker: object = field(init=False, repr=False)
    _tracks: dict[int, _Track] = field(default_factory=dict, init=False, repr=False)
    # Track ids must not repeat across processor restarts: a short random run id is part of them.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8], init=False)
    tracks_started: int = field(default=0, init=False)
    tracks_without_good_frames: int = field(default=0, init=False)
    fragments_dropped: int = field(default=0, init=False)  # unknown fragments, and known tracks refound
    _recent: deque[_Track] = field(default_factory=deque, init=False, repr=False)  # decided, by decision time

    def __post_init__(self) -> None:
        from trackers import ByteTrackTracker

        self._tracker = ByteTrackTracker(
            # trackers counts the buffer in frames of a 30 fps reference whatever frame_rate is
            # (its time budget is lost_track_buffer / 30 s): scale our seconds by 30, not by our fps.
            lost_track_buffer=max(1, int(round(self.lost_after_s * 30.0))),
            frame_rate=self.fps,
            track_activation_threshold=0.5,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=0.1,
            high_conf_det_threshold=0.6,
        )

    def assign(self, faces: list[FaceObservation]) -> list[tuple[int, FaceObservation]]:
        """Phase 1: ByteTrack over this frame's faces; the faces on confirmed tracks, with their track key."""
        import supervision as sv

        if faces:
            detections = sv.Detections(
                xyxy=np.array([f.box for f in faces], dtype=np.float32),
                confidence=np.array([f.score for f in faces], dtype=np.float32),
                class_id=np.zeros(len(faces), dtype=int),
                data={"index": np.arange(len(faces))},
            )
        else:
            detections = sv.Detections.empty()
        tracked = self._tracker.update(detections)
        ids = tracked.tracker_id if tracked.tracker_id is not None else []
        return [(int(tracker_id), faces[int(index)]) for tracker_id, index in zip(ids, tracked.data.get("index", []))
                if tracker_id is not None and int(tracker_id) >= 0]  # -1: not confirmed yet

    def wants_embedding(self, key: int, face: FaceObservation) -> bool:
        """Only faces that passed the quality gate, on tracks not decided yet, are worth an embedding; once
        a track has ``decide_after`` embeddings, only a face better than its best or every
        ``embed_every``-th good face (counting this one): see :meth:`refining`."""
        if face.quality <= 0 or face.crop is None:
            return False
        track = self._tracks.get(key)
        if track is None:
            return True
        if track.decided:
            return False
        # (a better face by a clear step: quality jitters by a few hundredths from frame to frame)
        if not self.has_looks(track) or face.quality > track.best_quality + 0.02:
            return True
        if track.stranger or track.clear:
            return False
        return (track.looks + 1) % max(1, self.embed_every) == 0

    def has_looks(self, track: _Track) -> bool:
        """Whether the track has the embeddings its answer needs: ``decide_after``, or ``clear_after`` when
        that answer was clear on its last look (see the module's text)."""
        return track.frames >= self.decide_after or track.clear

    def refining(self, key: int) -> bool:
        """Whether an embedding of track ``key`` would only refine an answer it can already give (it has its
        looks and waits for its liveness frames): the recognition stage skips those while room cameras are
        starved of model time (:meth:`~processor.scheduler.Scheduler.rooms_starved`)."""
        track = self._tracks.get(key)
        return track is not None and self.has_looks(track)

    def wants_liveness(self, key: int) -> bool:
        """Whether this frame's face on track ``key`` (from :meth:`assign`) feeds liveness cues: the check
        is on and the track is not decided yet (a new track is not). Its cues can then be measured ahead,
        off the event loop (:func:`measure_liveness`), and :meth:`settle` only sums them."""
        if self.liveness is None:
            return False
        track = self._tracks.get(key)
        return track is None or not track.decided

    def settle(self, assigned: list[tuple[int, FaceObservation]], *, pts_s: float, captured_at: float,
               frame_size: tuple[int, int], match: Matcher, image: np.ndarray | None = None) -> list[TrackDecision]:
        """Phase 2: add the faces (embedded where wanted) to their tracks; return the decisions completed
        (early, or because a track ended). With the frame's ``image`` (BGR) tracks keep the clothing of
        their best frame."""
        decisions: list[TrackDecision] = []
        for key, face in assigned:
            track = self._tracks.get(key)
            if track is not None and track.decided and _someone_else(track.last_box, face.box):
                del self._tracks[key]  # decided, so nothing is owed at its end: the key's new face is a new track
                track = None
            if track is None:
                track = self._tracks[key] = self._new_track(key, pts_s)
            track.add(face, pts_s, captured_at, image)
            if not track.decided and track.frames >= self._judged_from:
                decisions.extend(self._early(track, frame_size, match))
        for key in [k for k, t in self._tracks.items() if pts_s - t.last_pts_s > self.lost_after_s]:
            decisions.extend(self._end(self._tracks.pop(key), frame_size, match))
        decisions.extend(self._gone(pts_s, frame_size, match))
        return decisions

    def _early(self, track: _Track, frame_size: tuple[int, int], match: Matcher) -> list[TrackDecision]:
        """A track with ``clear_after`` embeddings or more: its answer noted as clear or not, and with its
        looks (:meth:`has_looks`) decided now if it is clearly live and known; else noted as a clear
        stranger or not (see the module's text), for :meth:`wants_embedding`."""
        looked = None  # the mean's match, asked once a look
        if self._judged_from < self.decide_after:
            looked = match(track.mean_embedding())
            track.clear = self._clear(looked)
        if not self.has_looks(track):
            return []
        if self._clearly_live(track):
            decision = self._decide(track, frame_size, match, ended=False)
            if decision.person_id is not None:
                return self._settle_decision(track, decision)
            # (a suspect track's score is that of whom it pictures: not a stranger's)
            score = decision.score
        elif self.stranger_below is not None:
            score = (looked if looked is not None else match(track.mean_embedding())).score
        else:
            return []
        track.stranger = self.stranger_below is not None and score < self.stranger_below
        return []

    @property
    def _judged_from(self) -> int:
        """Embeddings from which a track's answer is looked at: ``clear_after`` when it is below
        ``decide_after``, else ``decide_after``."""
        return min(self.decide_after, self.clear_after or self.decide_after)

    def _clear(self, result: MatchResult) -> bool:
        """Whether a mean's match is a clear answer: nobody near (below ``stranger_below``), or an enrolled
        person by far (``known_above`` or more, the gallery's margin met: ``person_id`` set)."""
        stranger = self.stranger_below is not None and result.score < self.stranger_below
        known = self.known_above is not None and result.person_id is not None and result.score >= self.known_above
        return stranger or known

    def _gone(self, pts_s: float, frame_size: tuple[int, int], match: Matcher) -> list[TrackDecision]:
        """Decide the undecided tracks whose face has been out of view for ``gone_after_s`` and two analysed
        frames, where that decision is a known, live person (see the module's text); the track stays open
        (decided) so that the face seen again is the same passage."""
        decisions: list[TrackDecision] = []
        if self.gone_after_s is None:
            return decisions
        for track in self._tracks.values():
            # (the frames its end would decide on: a door short of CPU may embed only two of a passage)
            if track.decided or track.frames < self.min_frames:
                continue
            if track.last_pts_s < pts_s:
                track.missed += 1
            # (stream times are sums of frame steps: 0.6 - 0.2 is a hair under 0.4)
            if track.missed < 2 or track.gone_tried or pts_s - track.last_pts_s < self.gone_after_s - 1e-6:
                continue
            decision = self._decide(track, frame_size, match, ended=True)
            if decision.person_id is None:  # unknown or suspect: the track's end decides it
                track.gone_tried = True  # (its frames are all in: no use asking again unless it is seen again)
                continue
            decisions.extend(self._settle_decision(track, decision))
        return decisions

    def _settle_decision(self, track: _Track, decision: TrackDecision) -> list[TrackDecision]:
        """The track is decided: remembered for the fragment and duplicate checks, and its decision
        returned to be published, or dropped (logged) as a repeat of a recent one."""
        track.decided, track.person_id = True, decision.person_id
        duplicate_of = self._duplicate_of(track, decision)
        self._remember(track, decision)
        if duplicate_of is not None:
            self._dropped(track, *duplicate_of)
            return []
        return [decision]

    def _new_track(self, key: int, pts_s: float) -> _Track:
        """A track for ByteTrack's ``key``. ByteTrack keeps a lost track longer than ``lost_after_s`` of
        stream time when frames are sparse (a door at its idle rate: three missed detections are 1.5 s) and
        may give its key to a face again: the same person (a second track of one passage, dropped once
        decided: :meth:`_duplicate_of`) or the next one stepping into the same place (recognised anew). Its
        track id is then the key's with a suffix: one id, one track, whatever the key."""
        track_id = f"{self.camera_id}-{self.run_id}-{key}"
        earlier = sum(1 for t in self._recent if t.key == key)
        self.tracks_started += 1
        return _Track(track_id=f"{track_id}.{earlier}" if earlier else track_id, key=key, first_pts_s=pts_s,
                      last_pts_s=pts_s, liveness=self.liveness.new_track() if self.liveness is not None else None)

    def update(self, *, pts_s: float, captured_at: float, frame_size: tuple[int, int],
               faces: list[FaceObservation], match: Matcher) -> list[TrackDecision]:
        """Both phases for faces that already carry their embeddings (tests, simple callers)."""
        return self.settle(self.assign(faces), pts_s=pts_s, captured_at=captured_at, frame_size=frame_size,
                           match=match)

    def labels(self, assigned: list[tuple[int, FaceObservation]]) -> list[tuple[str, FaceObservation, str | None, bool]]:
        """(track id, face, person id, decided) of this frame's faces on confirmed tracks, for live displays."""
        out = []
        for key, face in assigned:
            track = self._tracks.get(key)
            if track is not None:
                out.append((track.track_id, face, track.person_id, track.decided))
        return out

    def flush(self, frame_size: tuple[int, int], match: Matcher) -> list[TrackDecision]:
        """End every open track (the camera stopped or the processor is shutting down)."""
        decisions: list[TrackDecision] = []
        for track in self._tracks.values():
            decisions.extend(self._end(track, frame_size, match))
        self._tracks.clear()
        return decisions

    def _end(self, track: _Track, frame_size: tuple[int, int], match: Matcher) -> list[TrackDecision]:
        if track.decided:
            return []
        if track.frames < self.min_frames:
            self.tracks_without_good_frames += 1
            return []
        return self._settle_decision(track, self._decide(track, frame_size, match, ended=True))

    def _duplicate_of(self, track: _Track, decision: TrackDecision) -> tuple[_Track, float | None] | None:
        """The recent decision this one repeats, if any (and the similarity, for an unknown fragment): an
        unknown track similar to it (:meth:`_fragment_of`), or a known one of the same person (ByteTrack
        lost the face and started a new track on it, or we ended the track and ByteTrack kept it: the passage was
        recognised already). A suspect track
        always reaches the review queue: never a duplicate."""
        if self.fragment_similarity is None or (decision.liveness is not None and decision.liveness.suspect):
            return None
        if decision.person_id is None:
            return self._fragment_of(track, decision)
        for other in reversed(self._recent):
            # (the same ByteTrack key: ByteTrack kept the face's track through the gap, however long)
            if (other is not track and other.person_id == decision.person_id
                    and (other.key == track.key or self._near_in_time(other, track))):
                return other, None
        return None

    def _dropped(self, track: _Track, of: _Track, similarity: float | None) -> None:
        self.fragments_dropped += 1
        if similarity is None:
            log.info("face track %s dropped: %s again, recognised on %s just before (same passage) on %s",
                     track.track_id, track.person_id, of.track_id, self.camera_id)
        else:
            log.info("face track %s dropped: unknown, and a fragment of %s (%s, similarity %.3f) on %s",
                     track.track_id, of.track_id, of.person_id or "unknown", similarity, self.camera_id)

    def _near_in_time(self, other: _Track, track: _Track) -> bool:
        """``other`` was last seen at most ``fragment_window_s`` before ``track`` began, or overlaps it (and
        did not begin after it ended: a stream restarted, times went back)."""
        return track.first_pts_s - other.last_pts_s <= self.fragment_window_s and other.first_pts_s <= track.last_pts_s

    def _remember(self, track: _Track, decision: TrackDecision) -> None:
        track.decision_embedding = decision.embedding
        self._recent.append(track)
        # a minute past the window is long gone for any track still open (bounded either way)
        while self._recent and (len(self._recent) > 64 or
                                self._recent[0].last_pts_s < track.last_pts_s - self.fragment_window_s - 60):
            self._recent.popleft()

    def _fragment_of(self, track: _Track, decision: TrackDecision) -> tuple[_Track, float] | None:
        """The recent decision (and similarity) this unknown track is a fragment of, if any: a decided
        track of this camera last seen at most ``fragment_window_s`` before this one began (or still
        overlapping it) whose decision embedding is as similar as the gallery requires of a match."""
        if self.fragment_similarity is None:
            return None
        best: tuple[_Track, float] | None = None
        for other in self._recent:
            if other is track or not self._near_in_time(other, track):
                continue
            similarity = float(decision.embedding @ other.decision_embedding)
            if similarity >= self.fragment_similarity and (best is None or similarity > best[1]):
                best = (other, similarity)
        return best

    def _clearly_live(self, track: _Track) -> bool:
        """An early decision needs the liveness cues of enough frames, and live (``min_frames``), or of fewer
        frames showing no picture edge at all (``clear_frames``, score 1.0); otherwise the track is decided
        when it ends, on the cues of the whole passage."""
        if track.liveness is None:
            return True
        frames, settings = track.liveness.frames, self.liveness
        if frames >= settings.min_frames:
            return not track.liveness.decide().suspect
        return frames >= settings.clear_frames and track.liveness.decide().score >= 1.0

    def _decide(self, track: _Track, frame_size: tuple[int, int], match: Matcher, *, ended: bool) -> TrackDecision:
        embedding = track.mean_embedding()
        result = match(embedding)
        centre_x = (track.best_box[0] + track.best_box[2]) / 2
        liveness = track.liveness.decide() if track.liveness is not None else None
        if liveness is not None and liveness.suspect:  # a picture of someone gives nobody's identity
            result, pictured = MatchResult(None, result.score, result.margin), result.person_id
        else:
            pictured = None
        return TrackDecision(
            camera_id=self.camera_id, track_id=track.track_id, embedding=embedding,
            quality=float(track.best_quality), frames=track.frames, box=track.best_box,
            frame_size=frame_size, best_pts_s=track.best_pts_s, first_pts_s=track.first_pts_s,
            last_pts_s=track.last_pts_s, captured_at=track.last_captured_at, crop=track.best_crop,
            person_id=result.person_id, score=float(result.score), margin=float(result.margin), ended=ended,
            appearance=track.best_appearance, side=_side(centre_x, frame_size[0]),
            liveness=liveness, pictured_person_id=pictured,
        )

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    @property
    def undecided_tracks(self) -> int:
        """Open tracks whose identity is not decided yet: the frames that can still change an answer."""
        return sum(1 for track in self._tracks.values() if not track.decided)


def liveness_crop(face: FaceObservation) -> np.ndarray | None:
    """The aligned crop the liveness cues look at: only a face that passed the quality gate has one."""
    return face.crop if face.quality > 0 else None


def measure_liveness(faces: list[tuple[np.ndarray, FaceObservation, list[FaceObservation]]]) -> None:
    """Measure the liveness cues of each (frame image, face, the frame's faces) into ``face.cues``: the
    per-face work of the check, with no track state, for a worker thread. The frame's other faces are left
    out of the face's edge profile (processor/stages/liveness.py: people side by side)."""
    for image, face, frame_faces in faces:
        others = [other.box for other in frame_faces if other is not face]
        face.cues = measure(image, face.box, liveness_crop(face), others)


def _someone_else(last: tuple[float, float, float, float], box: tuple[float, float, float, float]) -> bool:
    """Whether a face ByteTrack put on a track cannot be the face last seen on it: half its area or less,
    or more than 1.5 face widths away. ByteTrack keeps a lost track's key for a second and gives it to a
    face where its motion model expects the lost one; at a door that is the next person stepping in, far
    (small) where the last one came close (large), and a decided track would swallow their passage. (One
    person walking towards a door camera does not lose half their face's area between analysed frames; if
    they do, the new track is decided as the same person and dropped as the passage's duplicate.)"""
    last_w, last_h = last[2] - last[0], last[3] - last[1]
    w, h = box[2] - box[0], box[3] - box[1]
    if last_w <= 0 or last_h <= 0:
        return False
    far = np.hypot((box[0] + box[2] - last[0] - last[2]) / 2, (box[1] + box[3] - last[1] - last[3]) / 2)
    return w * h <= 0.5 * last_w * last_h or far > 1.5 * max(w, last_w)


def _side(centre_x: float, width: float) -> str | None:
    """The half of the image a face was in; None in the middle tenth (someone walking in alone, centred)."""
    if abs(centre_x - width / 2) < 0.05 * width:
        return None
    return "left" if centre_x < width / 2 else "right"
