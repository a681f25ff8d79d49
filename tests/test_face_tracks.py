"""Per-track identity at the door (pure logic on synthetic observations; ByteTrack is the real one)."""

from __future__ import annotations

import numpy as np

from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult
from processor.appearance import describe_person, distance

RNG = np.random.default_rng(3)
ALICE = RNG.normal(size=128).astype(np.float32)
ALICE /= np.linalg.norm(ALICE)


def near(vector: np.ndarray, noise: float) -> np.ndarray:
    v = vector + RNG.normal(scale=noise, size=vector.shape).astype(np.float32)
    return v / np.linalg.norm(v)


def matcher(embedding: np.ndarray) -> MatchResult:
    score = float(embedding @ ALICE)
    return MatchResult("alice" if score > 0.5 else None, score, score)


def walk(tracker: FaceTracker, frames: int, faces_at) -> list:
    decisions = []
    for i in range(frames):
        decisions += tracker.update(pts_s=i / 10, captured_at=float(i), frame_size=(1280, 720),
                                    faces=faces_at(i), match=matcher)
    return decisions


def test_one_decision_per_passage_early_for_known_at_end_for_unknown():
    stranger = RNG.normal(size=128).astype(np.float32)
    stranger /= np.linalg.norm(stranger)

    def faces_at(i):
        faces = []
        if i < 30:  # alice walks left to right, 3 s
            x = 100 + i * 10
            faces.append(FaceObservation((x, 200, x + 80, 300), 0.9, 0.8, near(ALICE, 0.02)))
        if 10 <= i < 35:  # a stranger on the other side
            x = 1100 - (i - 10) * 10
            faces.append(FaceObservation((x, 250, x + 90, 360), 0.9, 0.7, near(stranger, 0.02)))
        return faces

    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5)
    decisions = walk(tracker, 50, faces_at)
    assert len(decisions) == 2
    known = [d for d in decisions if d.person_id == "alice"]
    unknown = [d for d in decisions if d.person_id is None]
    assert len(known) == 1 and len(unknown) == 1
    assert not known[0].ended and known[0].frames == 5  # decided early, after 5 good frames
    assert unknown[0].ended and unknown[0].frames >= 20
    assert known[0].track_id != unknown[0].track_id
    assert tracker.open_tracks == 0


def test_gated_faces_do_not_vote_and_short_tracks_give_no_event():
    def faces_at(i):
        if i < 20:
            return [FaceObservation((300, 200, 340, 240), 0.9, 0.0, None)]  # always rejected by the gate
        return []

    tracker = FaceTracker(camera_id="door", fps=10)
    assert walk(tracker, 40, faces_at) == []
    assert tracker.tracks_without_good_frames == 1


def test_quality_weighting_prefers_good_frames():
    bad = -ALICE  # blurry frames that would point the wrong way

    def faces_at(i):
        if i >= 12:
            return []
        good = i % 3 != 0
        return [FaceObservation((400 + i, 200, 480 + i, 300), 0.9, 0.9 if good else 0.05,
                                near(ALICE, 0.02) if good else bad)]

    tracker = FaceTracker(camera_id="door", fps=10, decide_after=100, lost_after_s=0.3)
    decisions = walk(tracker, 20, faces_at)
    assert len(decisions) == 1 and decisions[0].person_id == "alice" and decisions[0].ended
    assert decisions[0].quality == 0.9


def test_a_decision_carries_the_clothing_below_its_best_face_and_its_side():

    stranger = RNG.normal(size=128).astype(np.float32)
    stranger /= np.linalg.norm(stranger)
    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5)
    decisions = []
    for i in range(30):
        image = np.full((720, 1280, 3), 190, np.uint8)
        faces = []
        if i < 20:  # alice in a red shirt on the left, the stranger in blue on the right
            for x, colour, who, quality in ((200 + i, (40, 40, 200), ALICE, 0.5 + i / 100),
                                            (900 - i, (200, 80, 30), stranger, 0.4 + i / 100)):
                image[330:720, x - 40:x + 140] = colour
                image[200:320, x:x + 100] = (120, 150, 200)
                faces.append(FaceObservation((x, 200, x + 100, 320), 0.9, quality, near(who, 0.02)))
        decisions += tracker.settle(tracker.assign(faces), pts_s=i / 10, captured_at=float(i),
                                    frame_size=(1280, 720), match=matcher, image=image)
    by_person = {d.person_id: d for d in decisions}
    assert set(by_person) == {"alice", None}
    assert (by_person["alice"].side, by_person[None].side) == ("left", "right")
    red = np.full((300, 200, 3), (40, 40, 200), np.uint8)
    assert distance(by_person["alice"].appearance, describe_person(red, (20, 10, 180, 290))) < 0.2
    assert distance(by_person[None].appearance, describe_person(red, (20, 10, 180, 290))) > 0.5
    # without the frame image there is no descriptor (the side still comes from the face box)
    plain = walk(FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5), 30,
                 lambda i: [FaceObservation((100, 200, 180, 300), 0.9, 0.8, near(ALICE, 0.02))] if i < 20 else [])
    assert plain[0].appearance is None and plain[0].side == "left"
