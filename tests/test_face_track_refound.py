"""A decided person at the door is analysed at its idle rate (2 fps): a few missed detections are then
seconds, longer than a track's ``lost_after_s``. When the face is found again (by ByteTrack under the
same id, or as a new track) it is the same passage: one recognition, never a second (pure logic on
synthetic observations; ByteTrack is the real one)."""

from __future__ import annotations

import numpy as np
import pytest

from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult

RNG = np.random.default_rng(21)


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


PEOPLE = {"alice": _unit(1), "bob": _unit(2)}


def _near(vector: np.ndarray) -> np.ndarray:
    v = vector + RNG.normal(scale=0.02, size=vector.shape).astype(np.float32)
    return v / np.linalg.norm(v)


def _match(embedding: np.ndarray) -> MatchResult:
    person, score = max(((p, float(embedding @ v)) for p, v in PEOPLE.items()), key=lambda pv: pv[1])
    return MatchResult(person if score > 0.5 else None, score, score)


class Door:
    """A door camera as the processor drives it: 10 fps while a track is undecided, 2 fps (the idle rate)
    once every face in view is decided; the embedder asked only for the faces the tracker wants."""

    def __init__(self, **settings):
        self.tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, fragment_similarity=0.5, **settings)
        self.pts = 0.0
        self.decisions = []
        self.embedded = 0

    def frame(self, faces: list[tuple[str, float]]) -> None:
        """One analysed frame with a face of each (person, x)."""
        observations = [FaceObservation((x, 200, x + 80, 300), 0.9, 0.8, None, np.zeros((4, 4, 3), np.uint8))
                        for _, x in faces]
        pairs = self.tracker.assign(observations)
        for key, face in pairs:
            if self.tracker.wants_embedding(key, face):
                person = faces[observations.index(face)][0]
                face.embedding = _near(PEOPLE[person])
                self.embedded += 1
        self.decisions += self.tracker.settle(pairs, pts_s=self.pts, captured_at=self.pts, frame_size=(1280, 720),
                                              match=_match)
        busy = self.tracker.undecided_tracks > 0 or len(pairs) < len(observations)
        self.pts += 0.1 if busy else 0.5

    def passage(self, person: str, *, missed: int, moved_px: float, x: float = 400) -> None:
        """``person`` walks up and is decided; stands (idle rate); the face is missed for ``missed`` frames;
        found again ``moved_px`` further; then leaves."""
        for i in range(8):
            self.frame([(person, x + i * 5)])
        for _ in range(4):
            self.frame([(person, x + 40)])
        for _ in range(missed):
            self.frame([])
        for _ in range(10):
            self.frame([(person, x + 40 + moved_px)])

    def leave(self, frames: int = 30) -> None:
        for _ in range(frames):
            self.frame([])


@pytest.mark.parametrize("missed", [1, 2, 3, 4, 6])
def test_a_face_lost_at_the_idle_rate_and_found_again_in_place_is_one_recognition(missed):
    door = Door()
    door.passage("alice", missed=missed, moved_px=0)
    door.leave()
    assert [d.person_id for d in door.decisions] == ["alice"]
    # up to 1 s (2 frames at 2 fps) the track stays open; from 1.5 s on it had ended and a second one starts
    # (ByteTrack may keep the key: the second track's id is not the first's), decided, and dropped
    assert door.tracker.tracks_started == (1 if missed <= 2 else 2)
    assert door.tracker.fragments_dropped == (0 if missed <= 2 else 1)


@pytest.mark.parametrize("missed", [2, 3])
def test_a_face_found_again_as_a_new_track_of_the_same_person_is_one_recognition(missed):
    door = Door()
    door.passage("alice", missed=missed, moved_px=300)  # too far for ByteTrack: a new track
    door.leave()
    assert door.tracker.tracks_started == 2
    assert [d.person_id for d in door.decisions] == ["alice"] and door.tracker.fragments_dropped == 1


def test_the_next_person_stepping_into_the_place_of_a_lost_face_is_recognised_under_their_own_id():
    door = Door()
    door.passage("alice", missed=3, moved_px=0)
    for _ in range(3):  # alice's face is lost at the idle rate (1.5 s)...
        door.frame([])
    for _ in range(10):  # ... and bob stands where she stood: ByteTrack may give him her key
        door.frame([("bob", 440)])
    door.leave()
    assert [d.person_id for d in door.decisions] == ["alice", "bob"]
    alice, bob = door.decisions[0].track_id, door.decisions[1].track_id
    assert bob.startswith(alice + ".")  # ByteTrack did give him her key; the track id is his own all the same


def test_someone_else_right_after_and_the_same_person_later_are_recognitions():
    door = Door()
    door.passage("alice", missed=3, moved_px=300)
    door.leave(3)  # 1.5 s later, well within fragment_window_s
    door.passage("bob", missed=0, moved_px=0, x=100)  # another person, just after: recognised
    door.leave()
    door.passage("alice", missed=0, moved_px=0)  # alice again, well past fragment_window_s: another passage
    door.leave()
    assert [d.person_id for d in door.decisions] == ["alice", "bob", "alice"]


def test_without_the_fragment_check_a_refound_person_is_recognised_twice():
    """The check is the fragment one (``fragment_similarity``): off, a new track of the same person is a
    second recognition, as it was (the reopening of ByteTrack's own track stays: it is the same track)."""
    door = Door()
    door.tracker.fragment_similarity = None
    door.passage("alice", missed=3, moved_px=300)
    door.leave()
    assert [d.person_id for d in door.decisions] == ["alice", "alice"]
