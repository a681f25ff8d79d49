"""The door's liveness cues are measured off the event loop: the recognition stage measures each face of
an undecided track in a worker thread beside the embedding (processor/pipeline.py), and the track only
sums them. The decisions must be exactly those of the tracker measuring them itself."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np

from processor.frames import Frame
from processor.pipeline import RecognitionStage
from processor.stages.door_faces import FaceBatchResult
from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult
from processor.stages.liveness import LivenessSettings, LivenessTrack, measure

FACE = (600.0, 300.0, 680.0, 400.0)
LANDMARKS = np.array([[625, 340], [655, 340], [640, 360], [628, 380], [652, 380]], np.float32)
SETTINGS = LivenessSettings(min_frames=20)


def _scene(k: int, with_border: bool, rng: np.random.Generator) -> np.ndarray:
    """A face-like blob with moving background lines, optionally inside a held picture's border."""
    image = np.full((720, 1280, 3), 120, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in FACE)
    shift = 9 * k - 100
    cv2.line(image, (400 + shift, 0), (400 + shift, 719), (30, 30, 30), 4)
    if with_border:
        cv2.rectangle(image, (x1 - 42, y1 - 50), (x2 + 42, y2 + 140), (240, 240, 240), -1)
        cv2.rectangle(image, (x1 - 34, y1 - 42), (x2 + 34, y2 + 132), (110, 120, 130), -1)
    cv2.ellipse(image, ((x1 + x2) // 2, (y1 + y2) // 2), (36, 50), 0, 0, 360, (140, 160, 200), -1)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def _faces(frames: int, with_border: bool):
    """(image, face) per frame; every third face gated out (no crop, quality 0), as at a real door."""
    rng = np.random.default_rng(5)
    out = []
    for k in range(frames):
        gated = k % 3 == 2
        crop = None if gated else np.clip(rng.normal(128, 40, (112, 112, 3)), 0, 255).astype(np.uint8)
        out.append((_scene(k, with_border, rng), lambda crop=crop, gated=gated: FaceObservation(
            FACE, 0.9, 0.0 if gated else 0.8, None, crop, LANDMARKS)))
    return out


class _UnitEmbedder:
    """One fixed unit embedding per crop (the gallery below matches it)."""

    def embed(self, crops):
        return [np.ones(8, np.float32) / np.sqrt(8) for _ in crops]


def _match(_embedding) -> MatchResult:
    return MatchResult("hanks", 0.9, 0.5)


def _through_the_tracker(frames):
    """The tracker measuring the cues itself, on the caller's thread (the way it used to be)."""
    tracker = FaceTracker(camera_id="door", fps=10, liveness=SETTINGS)
    decisions = []
    for k, (image, make) in enumerate(frames):
        face = make()
        if face.crop is not None:
            face.embedding = np.ones(8, np.float32) / np.sqrt(8)
        decisions += tracker.settle(tracker.assign([face]), pts_s=k / 10, captured_at=k / 10,
                                    frame_size=(1280, 720), match=_match, image=image)
    return decisions + tracker.flush((1280, 720), _match)


def _through_the_stage(frames):
    """The recognition stage: cues measured in its worker thread. Also the faces, to see which were measured."""
    events = []
    stage = RecognitionStage(embedder=_UnitEmbedder(), cameras={}, doors_by_camera={}, gallery=lambda: None,
                             publish=lambda topic, key, event, **_: events.append(event) or True, topic="t",
                             model_pack="open", fps_of=lambda _c: 10.0, liveness=SETTINGS)
    stage._match = _match  # the gallery's answer, as in _through_the_tracker
    faces = []

    async def run():
        for k, (image, make) in enumerate(frames):
            face = make()
            faces.append(face)
            await stage.handle([FaceBatchResult(Frame("door", k, k / 10, k / 10, image), [face])])
        stage.flush()

    asyncio.run(run())
    return events, faces


def test_the_stage_measures_the_cues_ahead_and_decides_exactly_as_the_tracker_did():
    for with_border in (True, False):
        frames = _faces(30, with_border)
        expected = _through_the_tracker(frames)
        events, faces = _through_the_stage(frames)
        assert len(expected) == len(events) == 1
        decision, event = expected[0], events[0]
        assert event["liveness"]["decision"] == decision.liveness.decision == ("suspect" if with_border else "live")
        assert event["liveness"]["score"] == round(decision.liveness.score, 3)
        assert event["liveness"]["frames"] == decision.liveness.frames
        assert event["person_id"] == decision.person_id
        assert event["liveness"]["pictured_person_id"] == decision.pictured_person_id
        # measured ahead (off the loop): each face that fed the track's cues (on a confirmed track, the
        # track undecided), none before the track was confirmed nor after its early decision
        measured = [face.cues is not None for face in faces]
        first, counted = measured.index(True), decision.liveness.frames
        assert measured == [False] * first + [True] * counted + [False] * (len(faces) - first - counted), measured
        # a held picture: decided when its track ends; a live face with no edge at all: at clear_frames
        assert decision.ended == with_border and (counted == SETTINGS.clear_frames) != with_border, counted


def test_summing_measured_cues_is_the_same_as_adding_frames():
    rng = np.random.default_rng(9)
    direct, ahead = LivenessTrack(), LivenessTrack()
    for k in range(12):
        image = _scene(k, True, rng)
        crop = image[300:412, 600:712] if k % 2 else None
        direct.add(image, FACE, LANDMARKS + k, crop)
        ahead.add_cues(measure(image, FACE, crop), LANDMARKS + k)
    assert direct.decide() == ahead.decide() and direct.frames == 12
    empty = LivenessTrack()
    empty.add_cues(measure(np.zeros((720, 1280, 3), np.uint8), (10.0, 10.0, 12.0, 12.0)))  # degenerate box
    assert empty.frames == 0 and empty.decide().decision == "live"
