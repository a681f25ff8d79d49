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
    undecided = []  # (open, undecided) tracks after each frame: what the door is owed frames for
    for i in range(12):
        tracker.update(pts_s=i / 10, captured_at=float(i), frame_size=(1280, 720), faces=faces_at(i), match=matcher)
        undecided.append((tracker.open_tracks, tracker.undecided_tracks))
    # alice's track (confirmed on its second frame) undecided until its 5th good frame, decided while still
    # in view; then the stranger's track comes, undecided
    assert undecided[:5] == [(0, 0)] + [(1, 1)] * 4 and undecided[5:11] == [(1, 0)] * 6 and undecided[11] == (2, 1)
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


def _blend(similarity: float, seed: int) -> np.ndarray:
    """A unit vector with exactly this cosine similarity to ALICE (seed 3 is ALICE itself: not that one)."""
    other = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    other -= (other @ ALICE) * ALICE
    other /= np.linalg.norm(other)
    v = similarity * ALICE + np.sqrt(1 - similarity ** 2) * other
    return (v / np.linalg.norm(v)).astype(np.float32)


def _split_passage(second_part, gap_frames: int = 8):
    """Alice walks in, recognised early; her track is lost (no face for ``gap_frames``) and a second
    track picks her up further on, whose faces are ``second_part`` (too turned to be recognised)."""
    def faces_at(i):
        if i < 15:
            x = 100 + i * 10
            return [FaceObservation((x, 200, x + 80, 300), 0.9, 0.8, near(ALICE, 0.02))]
        if 15 + gap_frames <= i < 30 + gap_frames:
            x = 700 + i * 10
            return [FaceObservation((x, 220, x + 80, 320), 0.9, 0.6, second_part)]
        return []
    return faces_at


def test_an_unknown_fragment_of_a_passage_just_decided_is_dropped():
    fragment = _blend(0.45, seed=11)  # below the matcher's 0.5, above the 0.4 a fragment needs
    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, fragment_similarity=0.4)
    decisions = walk(tracker, 60, _split_passage(fragment))
    assert [d.person_id for d in decisions] == ["alice"]
    assert tracker.fragments_dropped == 1 and tracker.tracks_started == 2
    # without the check (or with a stricter one) the same passage gives a second, unknown recognition
    for similarity in (None, 0.6):
        plain = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5,
                            fragment_similarity=similarity)
        assert [d.person_id for d in walk(plain, 60, _split_passage(fragment))] == ["alice", None]
        assert plain.fragments_dropped == 0


def test_a_stranger_right_after_and_a_fragment_seen_too_late_are_still_recognitions():
    stranger = _blend(0.0, seed=12)
    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, fragment_similarity=0.4)
    assert [d.person_id for d in walk(tracker, 60, _split_passage(stranger))] == ["alice", None]
    # the same look as the fragment above, but 5 s after alice's track was last seen: another passage
    late = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, fragment_similarity=0.4,
                       fragment_window_s=3.0)
    assert [d.person_id for d in walk(late, 100, _split_passage(_blend(0.45, seed=11), gap_frames=50))] \
        == ["alice", None]
    assert tracker.fragments_dropped == late.fragments_dropped == 0


def test_an_unknown_passage_split_in_two_gives_one_unknown_recognition():
    look = _blend(0.1, seed=13)  # nobody the gallery knows
    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, fragment_similarity=0.4)

    def faces_at(i):
        if i < 15 or 23 <= i < 35:
            x = 100 + i * 10 + (400 if i >= 23 else 0)
            return [FaceObservation((x, 200, x + 80, 300), 0.9, 0.7, near(look, 0.02))]
        return []
    decisions = walk(tracker, 60, faces_at)
    assert [d.person_id for d in decisions] == [None] and tracker.fragments_dropped == 1


def test_an_undecided_track_is_embedded_on_its_first_looks_then_only_on_better_or_every_third_face():
    stranger = _blend(0.0, seed=14)
    tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, embed_every=3)
    crop = np.zeros((112, 112, 3), np.uint8)
    embedded, decisions = [], []
    for i in range(50):
        faces = []
        if i < 30:  # 3 s in view, never recognised; frame 20 is a clearly better look
            x = 100 + i * 10
            faces.append(FaceObservation((x, 200, x + 80, 300), 0.9, 0.9 if i == 20 else 0.6, None, crop))
        pairs = tracker.assign(faces)
        for key, face in pairs:
            if tracker.wants_embedding(key, face):  # as the recognition stage does
                face.embedding = near(stranger, 0.02)
                embedded.append(i)
        decisions += tracker.settle(pairs, pts_s=i / 10, captured_at=float(i), frame_size=(1280, 720),
                                    match=matcher)
    looks = list(range(embedded[0], 30))  # from the frame ByteTrack confirmed the track on
    assert embedded[0] <= 1 and embedded[:5] == looks[:5]  # the first decide_after looks, all
    assert 20 in embedded  # the better look
    assert len(embedded) <= 5 + 1 + len(looks[5:]) // 3 + 1 < len(looks)  # 29 looks: at most 15 embedded
    assert len(decisions) == 1 and decisions[0].person_id is None and decisions[0].frames == len(embedded)
    assert decisions[0].quality == 0.9
    # gated-out faces and faces of decided tracks are never embedded
    assert not tracker.wants_embedding(0, FaceObservation((0, 0, 50, 50), 0.9, 0.0, None, None))


def _embedded_looks(tracker: FaceTracker, look) -> tuple[list[int], list]:
    """30 frames of one face walking across a door (``look(i)``: (quality, embedding) of frame i), embedded
    where the tracker wants it as the recognition stage does: the frames embedded, the decisions."""
    crop = np.zeros((112, 112, 3), np.uint8)
    embedded, decisions = [], []
    for i in range(45):
        faces = []
        if i < 30:
            x = 100 + i * 10
            faces.append(FaceObservation((x, 200, x + 80, 300), 0.9, look(i)[0], None, crop))
        pairs = tracker.assign(faces)
        for key, face in pairs:
            if tracker.wants_embedding(key, face):
                face.embedding = look(i)[1]
                embedded.append(i)
        decisions += tracker.settle(pairs, pts_s=i / 10, captured_at=float(i), frame_size=(1280, 720),
                                    match=matcher)
    return embedded, decisions


def test_a_clear_strangers_track_is_embedded_only_on_its_first_and_clearly_better_looks():
    stranger, near_miss = _blend(0.0, seed=16), _blend(0.45, seed=17)  # matcher: alice above 0.5

    def tracker():
        return FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, embed_every=3,
                           stranger_below=0.35)

    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.9 if i == 20 else 0.6, near(stranger, 0.02)))
    assert len(embedded) == 6 and 20 in embedded  # the first five looks and the better one, nothing else
    assert [d.person_id for d in decisions] == [None] and decisions[0].frames == 6
    # someone matching nobody, but not by far, is embedded every third look as before
    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.9 if i == 20 else 0.6, near(near_miss, 0.02)))
    assert len(embedded) >= 5 + 1 + 6 and [d.person_id for d in decisions] == [None]
    # a known person whose first looks were poor (looking down: low quality, far from her enrolment) is
    # embedded again once she looks up, and recognised
    embedded, decisions = _embedded_looks(
        tracker(), lambda i: (0.3, _blend(0.05, seed=18)) if i < 8 else (0.8, near(ALICE, 0.05)))
    assert [d.person_id for d in decisions] == ["alice"] and any(i >= 8 for i in embedded)


BOB = _blend(0.0, seed=15)


def _one_after_another(gap_frames: int):
    """Alice walks towards the door camera (her face grows from 80 to 170 px), recognised early; ``gap_frames``
    after her last face bob steps in where she began, far from the camera (80 px), and walks the same way."""
    def faces_at(i):
        if i < 10:
            size = 80 + 10 * i
            return [FaceObservation((600 - size / 2, 200, 600 + size / 2, 200 + size * 1.25), 0.9, 0.8,
                                    near(ALICE, 0.02))]
        if 10 + gap_frames <= i < 20 + gap_frames:
            size = 80 + 10 * (i - 10 - gap_frames)
            return [FaceObservation((600 - size / 2, 200, 600 + size / 2, 200 + size * 1.25), 0.9, 0.8,
                                    near(BOB, 0.02))]
        return []
    return faces_at


def bob_or_alice(embedding: np.ndarray) -> MatchResult:
    for name, vector in (("alice", ALICE), ("bob", BOB)):
        if float(embedding @ vector) > 0.5:
            return MatchResult(name, float(embedding @ vector), 0.3)
    return MatchResult(None, 0.0, 0.0)


def test_the_next_person_stepping_in_where_a_decided_face_began_gets_a_track_of_their_own():
    """ByteTrack keeps a lost track's key for a second and may give it to the next face near where the lost
    one's motion model expects it: bob, stepping in half a second after alice's decided passage, must not
    be swallowed by her decided track (no decision at all for him)."""
    for gap_frames in (3, 5, 8):
        tracker = FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=1.0, fragment_similarity=0.4)
        faces_at, decisions = _one_after_another(gap_frames), []
        for i in range(40):
            decisions += tracker.update(pts_s=i / 10, captured_at=float(i), frame_size=(1280, 720),
                                        faces=faces_at(i), match=bob_or_alice)
        decisions += tracker.flush((1280, 720), bob_or_alice)
        assert [d.person_id for d in decisions] == ["alice", "bob"], (gap_frames, decisions)
        assert decisions[0].track_id != decisions[1].track_id


def test_a_clear_answer_needs_only_its_first_clear_after_looks():
    """A clearly known face (far above the match threshold) and a clear stranger (far below) are embedded on
    their first three looks and then only on clearly better ones; the known one is decided on its third, and
    a near miss (matching nobody, but not by far) still gets its five first looks and every third after."""
    stranger, near_miss = _blend(0.0, seed=16), _blend(0.45, seed=17)  # matcher: alice above 0.5

    def tracker(clear_after=3):
        return FaceTracker(camera_id="door", fps=10, decide_after=5, lost_after_s=0.5, embed_every=3,
                           stranger_below=0.35, known_above=0.65, clear_after=clear_after)

    # alice, clearly: decided on her third embedding (no liveness check here), nothing embedded after it
    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.6, near(ALICE, 0.02)))
    assert len(embedded) == 3 and [(d.person_id, d.frames) for d in decisions] == [("alice", 3)]
    # the same with clear_after at decide_after: five looks, as before the rule
    embedded, decisions = _embedded_looks(tracker(clear_after=5), lambda i: (0.6, near(ALICE, 0.02)))
    assert len(embedded) == 5 and [(d.person_id, d.frames) for d in decisions] == [("alice", 5)]
    # a clear stranger: three first looks and the clearly better one
    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.9 if i == 20 else 0.6, near(stranger, 0.02)))
    assert len(embedded) == 4 and 20 in embedded and [d.person_id for d in decisions] == [None]
    # a near miss is no clear answer: five first looks, then every third
    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.6, near(near_miss, 0.02)))
    assert len(embedded) >= 5 + 6 and [d.person_id for d in decisions] == [None]
    # alice recognised, but not by far (between the threshold and known_above): five looks before her decision
    embedded, decisions = _embedded_looks(tracker(), lambda i: (0.6, near(_blend(0.6, seed=19), 0.02)))
    assert [(d.person_id, d.frames) for d in decisions] == [("alice", 5)]
