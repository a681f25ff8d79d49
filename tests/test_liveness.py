"""The liveness cues' pure logic (processor/stages/liveness.py) on drawn windows and landmarks: a picture's
border that moves with the face adds up over frames, a background line that does not averages out; a
pixel grid makes a spectral peak; a flat picture's landmarks fit one similarity transform."""

from __future__ import annotations

import cv2
import numpy as np

from processor.model_catalogue import LIVENESS_MODEL, OPTIONAL_ROLES, pack_spec
from processor.model_packs import LoadedPack
from processor.stages.face_tracks import FaceObservation, FaceTracker, MatchResult
from processor.stages.liveness import (FRAME_HI, FRAME_LO, MAX_PROFILES, WINDOW, FaceCues, LivenessSettings,
                                       LivenessTrack, edge_profile, face_window, frame_cue, liveness_score,
                                       measure, median_profile,
                                       neighbour_columns, ramp, rigidity_residual, spectral_peak)

FACE = (600.0, 300.0, 680.0, 400.0)  # x1, y1, x2, y2: 80 x 100 px


def _scene(shift_background: int, with_border: bool, rng: np.random.Generator) -> np.ndarray:
    """A grey frame with a face-like blob at FACE; a vertical background line that moves frame to frame; and
    optionally a bright picture border fixed round the face (a held print)."""
    image = np.full((720, 1280, 3), 120, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in FACE)
    cv2.line(image, (400 + shift_background, 0), (400 + shift_background, 719), (30, 30, 30), 4)
    cv2.line(image, (560 + 3 * shift_background, 0), (560 + 3 * shift_background, 719), (220, 220, 220), 3)
    if with_border:
        cv2.rectangle(image, (x1 - 42, y1 - 50), (x2 + 42, y2 + 140), (240, 240, 240), -1)
        cv2.rectangle(image, (x1 - 34, y1 - 42), (x2 + 34, y2 + 132), (110, 120, 130), -1)
    cv2.ellipse(image, ((x1 + x2) // 2, (y1 + y2) // 2), (36, 50), 0, 0, 360, (140, 160, 200), -1)
    noise = rng.normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _frame_cue_over(frames: int, with_border: bool) -> float:
    rng = np.random.default_rng(3)
    track = LivenessTrack()
    for k in range(frames):
        track.add(_scene(9 * k - 60, with_border, rng), FACE)
    return track.cues()["frame"]


def test_a_border_fixed_to_the_face_is_a_frame_and_a_moving_background_line_is_not():
    held, genuine = _frame_cue_over(12, True), _frame_cue_over(12, False)
    assert held > FRAME_HI > FRAME_LO > genuine, (held, genuine)


NEIGHBOUR = (692.0, 305.0, 772.0, 405.0)  # someone walking in beside FACE, level with it


def _side_by_side(k: int, rng: np.random.Generator) -> np.ndarray:
    """FACE with a straight dark edge fixed 30 px left of it (a hood, a collar) and a neighbour's head and body
    on its right, both moving with it; a background line that moves."""
    image = _scene(9 * k - 60, False, rng)
    x1, y1, x2, y2 = (int(v) for v in FACE)
    cv2.line(image, (x1 - 30, y1), (x1 - 30, y2 + 120), (40, 40, 40), 5)
    nx1, ny1, nx2, ny2 = (int(v) for v in NEIGHBOUR)
    cv2.rectangle(image, (nx1 - 10, ny1 - 20), (nx2 + 10, ny2 + 200), (60, 50, 40), -1)
    cv2.ellipse(image, ((nx1 + nx2) // 2, (ny1 + ny2) // 2), (36, 50), 0, 0, 360, (140, 160, 200), -1)
    return image


def test_a_neighbour_walking_beside_is_not_a_pictures_edge():
    """Two people side by side: the neighbour's outline moves with the face like a print's edge. Counted, it
    makes a genuine face a picture (class-rush under load once); left out, it does not."""
    def frame_cue_over(others: tuple) -> float:
        rng, track = np.random.default_rng(3), LivenessTrack()
        for k in range(12):
            track.add_cues(measure(_side_by_side(k, rng), FACE, None, others))
        return track.cues()["frame"]

    assert frame_cue_over(()) > FRAME_HI  # the neighbour counted: a false picture
    assert frame_cue_over((NEIGHBOUR,)) < FRAME_LO
    # a column another face covered in under half the frames is averaged over the frames that saw it
    assert _frame_cue_over(12, True) > FRAME_HI
    rng, track = np.random.default_rng(3), LivenessTrack()
    for k in range(12):
        track.add_cues(measure(_scene(9 * k - 60, True, rng), FACE, None, (NEIGHBOUR,) if k % 3 == 0 else ()))
    assert track.cues()["frame"] > FRAME_HI


def test_neighbour_columns_are_those_of_level_faces_in_the_window():
    right = neighbour_columns(FACE, [NEIGHBOUR])
    assert right is not None and right[-1] and not right[: WINDOW // 2 + 4].any()  # the right side only
    assert neighbour_columns(FACE, [(692.0, 500.0, 772.0, 600.0)]) is None  # below the face: not level
    assert neighbour_columns(FACE, [(1000.0, 300.0, 1080.0, 400.0)]) is None  # out of the window
    assert neighbour_columns(FACE, []) is None


def test_one_straight_line_beside_the_face_is_not_a_pair():
    profile = np.zeros(WINDOW, np.float32)
    profile[WINDOW // 2 + 16] = 3.0  # one strong line on the right, nothing on the left
    assert frame_cue(profile) < 0.05
    profile[WINDOW // 2 - 18] = -3.0  # and its partner on the left (sign does not matter), 2 columns off centre
    assert frame_cue(profile) > 1.0


def _pair(strength: float) -> np.ndarray:
    profile = np.zeros(WINDOW, np.float32)
    profile[WINDOW // 2 + 16], profile[WINDOW // 2 - 16] = strength, -strength
    return profile


def test_a_pair_in_most_frames_is_a_picture_and_one_in_a_few_frames_is_not():
    """The track's profile is the per-column median over frames: a picture's edges, there in most frames,
    count in full; a strong pair in two frames of seven (a door frame crossing behind the face) does not,
    where a mean of the same frames would read it as a picture's edge."""
    few = [_pair(3.0)] * 2 + [_pair(0.0)] * 5
    most = [_pair(1.0)] * 5 + [_pair(0.0)] * 2
    assert frame_cue(median_profile(few)) < FRAME_LO < FRAME_HI < frame_cue(np.mean(few, axis=0))
    assert frame_cue(median_profile(most)) > FRAME_HI
    # a column another face covered in most frames (NaN) says nothing; in a few frames it is left out of those
    covered = _pair(1.0)
    covered[WINDOW // 2 - 20:WINDOW // 2 - 12] = np.nan
    assert frame_cue(median_profile([covered] * 4 + [_pair(1.0)] * 3)) < 0.05
    assert frame_cue(median_profile([covered] * 3 + [_pair(1.0)] * 4)) > FRAME_HI


def test_the_median_profile_is_numpys_median_of_each_columns_seen_frames():
    rng = np.random.default_rng(7)
    for frames in (1, 2, 5, 12, 40):
        profiles = [rng.normal(size=WINDOW).astype(np.float32) for _ in range(frames)]
        for k, profile in enumerate(profiles):
            profile[rng.integers(0, WINDOW, size=k % 9)] = np.nan  # another face, here and there
        stacked = np.vstack(profiles)
        for column, value in enumerate(median_profile(profiles)):
            seen = stacked[:, column][~np.isnan(stacked[:, column])]
            expected = np.median(seen) if 2 * seen.size >= frames and seen.size else 0.0
            assert abs(value - expected) < 1e-6, (frames, column, value, expected)


def test_a_long_track_keeps_a_bounded_thinned_record_of_its_frames():
    """A face that stays at the door for minutes: at most MAX_PROFILES frames' profiles are kept, thinned
    evenly over the whole stay (a picture's edge in the first 60 % of its frames still counts, in 40 % not)."""
    def stay(share_with_pair: float) -> LivenessTrack:
        track, frames = LivenessTrack(), 3 * MAX_PROFILES + 17
        for k in range(frames):
            track.add_cues(FaceCues(_pair(1.0 if k < share_with_pair * frames else 0.0)))
        assert track.frames == frames and len(track._profiles) <= MAX_PROFILES
        return track
    assert stay(0.6).decide().suspect and not stay(0.4).decide().suspect


def test_face_window_is_face_normalised_and_profiles_are_contrast_free():
    rng = np.random.default_rng(5)
    image = _scene(0, True, rng)
    window = face_window(image, FACE)
    assert window.shape == (WINDOW, WINDOW) and window.dtype == np.float32
    columns = edge_profile(window)
    darker = face_window((image * 0.5).astype(np.uint8), FACE)
    columns_dark = edge_profile(darker)
    assert np.allclose(columns, columns_dark, rtol=0.05, atol=0.05)  # (8-bit rounding of the darker copy)
    assert face_window(image, (10.0, 10.0, 12.0, 12.0)) is None  # degenerate box


def test_a_pixel_grid_makes_a_spectral_peak_and_a_smooth_face_does_not():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    face = 128 + 40 * np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / 400) + rng.normal(0, 3, (64, 64))
    grid = face * (1 + 0.25 * np.sin(2 * np.pi * xx / 3.3))
    assert spectral_peak(grid.astype(np.uint8)) > 2 * spectral_peak(face.astype(np.uint8))
    assert spectral_peak(np.zeros((10, 10), np.uint8)) == 0.0  # too small to tell


def test_rigidity_is_zero_for_a_similarity_and_not_for_a_turning_head():
    eyes_nose_mouth = np.array([[40, 50], [72, 50], [56, 66], [44, 84], [68, 84]], np.float32)
    angle, scale = np.deg2rad(4), 1.3
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    moved = eyes_nose_mouth @ rotation.T + (15, -4)
    assert rigidity_residual(eyes_nose_mouth, moved) < 1e-3
    turned = moved.copy()
    turned[2, 0] += 6  # the nose swings ahead of the eyes: the head turns
    assert rigidity_residual(eyes_nose_mouth, turned) > 0.05
    assert rigidity_residual(eyes_nose_mouth, np.zeros((5, 2), np.float32)) is None


def test_score_and_decision():
    assert ramp(0.2, 0.3, 0.6) == 0.0 and abs(ramp(0.45, 0.3, 0.6) - 0.5) < 1e-9 and ramp(9, 0.3, 0.6) == 1.0
    assert liveness_score({"frame": FRAME_LO - 0.1, "screen": 10.0}) == 1.0
    assert liveness_score({"frame": FRAME_HI + 0.1}) == 0.0
    assert liveness_score({"frame": 0.0, "screen": 1e6}) == 0.0  # a strong moiré alone is enough
    fresh = LivenessSettings().new_track()
    decided = fresh.decide()
    assert decided.decision == "live" and decided.frames == 0  # no cues: nothing against it
    rng = np.random.default_rng(9)
    held = LivenessSettings(suspect_below=0.5).new_track()
    for k in range(12):
        held.add(_scene(9 * k - 60, True, rng), FACE)
    verdict = held.decide()
    assert verdict.suspect and verdict.score < 0.5 and verdict.frames == 12
    assert verdict.to_event() == {"decision": "suspect", "score": verdict.score, "frames": 12}


def test_a_pack_finds_a_liveness_model_a_campus_copied_in(tmp_path):
    pack = LoadedPack("open", tmp_path, pack_spec("open"), {})
    assert "liveness" in OPTIONAL_ROLES and pack.optional("liveness") is None  # none ships
    (tmp_path / LIVENESS_MODEL.filename).write_bytes(b"onnx")
    spec, path = pack.optional("liveness")
    assert spec.role == "liveness" and spec.input_size == (112, 112) and path == tmp_path / "liveness.onnx"


def _track_through(with_border: bool, frames: int = 26, settings: LivenessSettings = LivenessSettings(min_frames=20),
                   **tracker_settings):
    """A door face tracker with the liveness check over ``frames`` frames of one face (a held picture or
    not); the matcher always says "hanks". Returns (decisions while in view, decisions at flush)."""

    tracker = FaceTracker(camera_id="door", fps=10, liveness=settings, **tracker_settings)
    rng = np.random.default_rng(11)
    embedding = np.ones(8, np.float32) / np.sqrt(8)
    landmarks = np.array([[625, 340], [655, 340], [640, 360], [628, 380], [652, 380]], np.float32)
    seen = []
    for k in range(frames):
        face = FaceObservation(FACE, 0.9, 0.8, embedding, np.zeros((112, 112, 3), np.uint8), landmarks)
        seen += tracker.settle(tracker.assign([face]), pts_s=k / 10, captured_at=k / 10, frame_size=(1280, 720),
                               match=lambda e: MatchResult("hanks", 0.9, 0.5),
                               image=_scene(9 * k - 100, with_border, rng))
    return seen, tracker.flush((1280, 720), lambda e: MatchResult("hanks", 0.9, 0.5))


def test_a_held_picture_gives_no_identity_and_a_live_face_is_decided_at_min_frames():
    old_rule = LivenessSettings(min_frames=20, clear_frames=20)  # no earlier decision for clean cues
    for settings in (old_rule, LivenessSettings(min_frames=20)):
        early, ended = _track_through(with_border=True, settings=settings)
        assert early == [] and len(ended) == 1  # never clearly live: decided when the track ends
        suspect = ended[0]
        assert suspect.person_id is None and suspect.pictured_person_id == "hanks" and suspect.liveness.suspect
    early, ended = _track_through(with_border=False, settings=old_rule)
    assert len(early) == 1 and ended == []
    live = early[0]
    assert live.person_id == "hanks" and live.pictured_person_id is None and not live.liveness.suspect
    assert live.liveness.frames == 20  # not before min_frames of cues


def test_a_face_with_no_picture_edge_is_decided_at_clear_frames():
    """A passage the door sees in few frames (a small face, a door short of CPU) is decided early once
    ``clear_frames`` of cues show no edge at all (score 1.0), not only when its track ends, a second later."""
    early, ended = _track_through(with_border=False, settings=LivenessSettings(min_frames=20, clear_frames=12))
    assert len(early) == 1 and ended == [], (early, ended)
    live = early[0]
    assert live.person_id == "hanks" and live.liveness.score == 1.0 and live.liveness.frames == 12
    # a passage shorter than clear_frames is still decided at its end, on every frame it had
    early, ended = _track_through(with_border=False, frames=10, settings=LivenessSettings(min_frames=20))
    assert early == [] and len(ended) == 1 and ended[0].person_id == "hanks", (early, ended)
    assert 0 < ended[0].liveness.frames < 12 and ended[0].ended, ended[0].liveness


def _short_passage(with_border: bool, known: bool = True, gone_after_s: float | None = 0.4):
    """Ten frames of one face (fewer than clear_frames), then an empty door at 5 fps: [(stream time, decision)]
    up to the track's end and a flush."""
    tracker = FaceTracker(camera_id="door", fps=5, liveness=LivenessSettings(min_frames=20),
                          gone_after_s=gone_after_s)
    rng = np.random.default_rng(11)
    embedding = np.ones(8, np.float32) / np.sqrt(8)
    landmarks = np.array([[625, 340], [655, 340], [640, 360], [628, 380], [652, 380]], np.float32)
    match = (lambda e: MatchResult("hanks" if known else None, 0.9, 0.5))
    out = []
    for k in range(18):
        pts = k / 5
        face = FaceObservation(FACE, 0.9, 0.8, embedding, np.zeros((112, 112, 3), np.uint8), landmarks)
        faces = [face] if k < 10 else []
        image = _scene(9 * k - 100, with_border, rng)
        out += [(pts, d) for d in tracker.settle(tracker.assign(faces), pts_s=pts, captured_at=pts,
                                                 frame_size=(1280, 720), match=match, image=image)]
    out += [(None, d) for d in tracker.flush((1280, 720), match)]
    return out


def test_a_known_live_face_gone_from_view_is_decided_then_not_at_track_end():
    """Ten faces (under clear_frames): the passage is decided once its face has been gone for gone_after_s
    (0.4 s, two frames at 5 fps), not a second later when its track ends; one decision all the same."""
    gone = _short_passage(with_border=False)
    assert len(gone) == 1, gone
    at, decision = gone[0]
    last_face = 9 / 5
    # nine frames of cues: ByteTrack confirms a track on its second frame
    assert decision.person_id == "hanks" and not decision.liveness.suspect and decision.liveness.frames == 9
    assert at is not None and 0.4 - 1e-6 <= at - last_face < 0.5, at
    waited = _short_passage(with_border=False, gone_after_s=None)  # off: decided when the track ends
    assert len(waited) == 1 and waited[0][0] is not None and waited[0][0] - last_face > 1.0, waited
    assert waited[0][1].person_id == "hanks"


def test_a_gone_picture_or_stranger_still_waits_for_the_track_end():
    for passage in (_short_passage(with_border=True), _short_passage(with_border=False, known=False)):
        assert len(passage) == 1, passage
        at, decision = passage[0]
        assert decision.person_id is None and (at is None or at - 9 / 5 > 1.0), passage
    suspect = _short_passage(with_border=True)[0][1]
    assert suspect.liveness.suspect and suspect.pictured_person_id == "hanks"
