"""Less work per room camera, pure logic: the motion gate (processor.stages.motion), the person
detector's input side per camera (processor.stages.input_size), coasting tracks (PersonTracker.coast)
and the person stage's plan (processor.stages.room_gating): which frames reach the detector, at what
side, and that the tracks give the same answer through coasted frames."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from infra.foundation.config import EXAMPLE_CONFIG, load_config
from processor.frames import Frame
from processor.stages.input_size import InputSizeChooser, possible_sides
from processor.stages.motion import MotionGate, MotionSettings
from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetection
from processor.stages.room import RoomStage
from processor.stages.room_gating import PersonStage, RoomGating

SETTINGS = MotionSettings(max_skip_s=2.0)
SEATED = (600.0, 300.0, 700.0, 560.0)


def room(people=(), noise_seed: int | None = None) -> np.ndarray:
    """A 1280x720 room: grey walls, a dark block per person box (x1, y1, x2, y2)."""
    image = np.full((720, 1280, 3), 120, np.uint8)
    for x1, y1, x2, y2 in people:
        image[int(y1):int(y2), int(x1):int(x2)] = (30, 40, 60)  # dark clothes
    if noise_seed is not None:  # sensor / compression noise of a few grey levels
        noise = np.random.default_rng(noise_seed).integers(-6, 7, image.shape)
        image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    return image


def test_a_still_room_is_coasted_until_max_skip_then_detected():
    gate = MotionGate(SETTINGS)
    reasons = [gate.decide(room([SEATED], noise_seed=n), n * 0.2).reason for n in range(12)]
    assert reasons[0] == "first"
    assert reasons[1:10] == ["still"] * 9  # noise of a few grey levels is not motion
    assert reasons[10] == "max_skip"  # 2 s after the last run, whatever the pixels say
    assert reasons[11] == "still"
    assert (gate.detected, gate.coasted) == (2, 10)


def test_a_camera_behind_puts_off_its_still_rooms_periodic_run_but_not_what_moved():
    """While a camera's next frames already wait, the periodic run waits max_skip_busy_s (coasted as
    ``deferred`` meanwhile); someone standing up or somebody new is still detected at once."""
    settings = MotionSettings(max_skip_s=2.0, max_skip_busy_s=6.0)
    gate = MotionGate(settings)
    gate.decide(room([SEATED], noise_seed=0), 0.0)
    gate.boxes = (SEATED,)
    reasons = [gate.decide(room([SEATED], noise_seed=n), n * 0.2, behind=True).reason for n in range(1, 31)]
    assert reasons[:9] == ["still"] * 9
    assert reasons[9:29] == ["deferred"] * 20  # 2.0 .. 5.8 s: due, put off
    assert reasons[29] == "max_skip"  # 6 s after the last run, behind or not
    # no longer behind: the run that is due (2 s since the last) comes at once
    assert gate.decide(room([SEATED], noise_seed=31), 8.0, behind=True).reason == "deferred"
    assert gate.decide(room([SEATED], noise_seed=32), 8.2).reason == "max_skip"
    # behind, someone standing up and somebody new are not put off
    stood = room([(600, 200, 700, 460)])
    assert gate.decide(stood, 8.4, behind=True).reason in ("track", "free")
    gate.decide(stood, 8.6, behind=True)
    newcomer = room([(600, 200, 700, 460), (100, 200, 140, 300)])
    assert gate.decide(newcomer, 9.0, behind=True).reason == "free"
    assert gate.reasons["deferred"] == 21


def test_the_person_stages_plan_puts_off_the_periodic_run_only_for_a_camera_with_frames_waiting():
    config = _gated_config()
    config = config.model_copy(update={"tracking": config.tracking.model_copy(
        update={"motion_max_skip_s": 2.0, "motion_max_skip_busy_s": 4.0})})
    camera = next(c.id for c in config.cameras if c.role == "room")
    waiting = {camera: 0}
    gating = RoomGating(config, 640)
    gating.backlog = lambda camera_id: waiting.get(camera_id, 0)

    def reasons(start: int, count: int) -> list[str]:
        return [gating.plan(Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, room([SEATED]))).reason
                for n in range(start, start + count)]

    assert reasons(0, 1) == ["first"]
    gating.observe(camera, [SEATED], faces_wanted=False)
    assert reasons(1, 10)[-1] == "max_skip"  # keeping up: every 2 s
    waiting[camera] = 2  # from now on its next frames wait
    behind = reasons(11, 20)
    # the last run at 2.0 s: due again from 4.0 s (put off: 4.0 .. 5.8 s), run at 6.0 s
    assert behind.index("max_skip") == 19 and behind.count("deferred") == 10
    assert not gating.plan(Frame(camera, 31, 6.2, 1006.2, room([SEATED]))).detect


def test_somebody_appearing_where_no_track_is_is_always_detected():
    gate = MotionGate(SETTINGS)
    gate.decide(room([SEATED]), 0.0)
    gate.boxes = (SEATED,)
    assert not gate.decide(room([SEATED]), 0.2).detect
    # a far, small person (40 x 100 px in the frame: 5 x 12 px at 160 wide) where nobody is tracked
    decision = gate.decide(room([SEATED, (100, 200, 140, 300)]), 0.4)
    assert decision.detect and decision.reason == "free"


def test_small_motion_inside_a_track_coasts_but_standing_up_is_detected():
    gate = MotionGate(SETTINGS)
    gate.decide(room([SEATED]), 0.0)
    gate.boxes = (SEATED,)
    hands = room([SEATED, (620, 420, 650, 440)])  # a small change inside the seated person's box
    hands[420:440, 620:650] = 250
    assert gate.decide(hands, 0.2).reason == "still"
    stood = room([(600, 200, 700, 460)])  # the same person, a box height higher: most of the box changed
    moved = gate.decide(stood, 0.4).reason
    assert moved in ("track", "free")
    # whoever moved may still be moving: once more
    assert gate.decide(stood, 0.6).reason == ("follow" if moved == "free" else "follow_track")
    assert gate.decide(stood, 0.8).reason == "still"  # the reference moved on with the detector runs


def test_a_known_person_walking_along_their_heading_is_their_motion_not_somebody_new():
    walker = (300.0, 300.0, 400.0, 560.0)
    ahead = (360.0, 300.0, 460.0, 560.0)  # 0.2 s later at 300 px/s: 60 px ahead, most of it outside the box
    heading = MotionGate(SETTINGS)
    heading.decide(room([walker]), 0.0)
    heading.boxes, heading.headings = (walker,), ((300.0, 0.0),)
    assert heading.decide(room([ahead]), 0.2).reason == "track"  # a settled decision: the reduced side may run it
    blind = MotionGate(SETTINGS)  # the same frames without the heading: an arrival's full-side "free"
    blind.decide(room([walker]), 0.0)
    blind.boxes = (walker,)
    assert blind.decide(room([ahead]), 0.2).reason == "free"
    # somebody appearing behind the walker, against the heading, is still somebody new
    behind = MotionGate(SETTINGS)
    behind.decide(room([walker]), 0.0)
    behind.boxes, behind.headings = (walker,), ((300.0, 0.0),)
    assert behind.decide(room([ahead, (150, 300, 220, 560)]), 0.2).reason == "free"
    # a still track sweeps nothing: somebody appearing beside it is somebody new
    still = MotionGate(SETTINGS)
    still.decide(room([SEATED]), 0.0)
    still.boxes, still.headings = (SEATED,), ((0.0, 0.0),)
    assert still.decide(room([SEATED, (720, 300, 780, 560)]), 0.2).reason == "free"


def test_motion_in_an_entry_zone_triggers_even_inside_a_track_box():
    zone = [(560, 400), (760, 400), (760, 600), (560, 600)]  # a door's zone overlapping the seated box
    gate = MotionGate(SETTINGS, {"door": zone})
    gate.decide(room([SEATED]), 0.0)
    gate.boxes = (SEATED,)
    frame = room([SEATED])
    frame[500:540, 640:680] = 250  # a small change inside the box, inside the zone
    assert gate.decide(frame, 0.2).reason == "free"
    no_zone = MotionGate(SETTINGS)
    no_zone.decide(room([SEATED]), 0.0)
    no_zone.boxes = (SEATED,)
    assert no_zone.decide(frame, 0.2).reason == "still"


def test_hold_count_changes_and_restarts_force_the_detector():
    gate = MotionGate(SETTINGS)
    still = room([SEATED])
    gate.decide(still, 0.0)
    gate.hold(0.5)
    assert [gate.decide(still, t).reason for t in (0.2, 0.4, 0.6)] == ["held", "held", "still"]
    gate.ran(1)
    gate.ran(2)  # the last two runs counted differently: people are still settling
    assert gate.decide(still, 0.8).reason == "settling"
    gate.ran(2)
    assert gate.decide(still, 1.0).reason == "still"
    assert gate.decide(still, 0.1).reason == "restart"  # stream time went back


def test_input_side_goes_down_after_settling_for_large_people_and_never_below_the_floor():
    chooser = InputSizeChooser(640, 448, min_person_px=64, settle_s=5.0, step=64)
    sides = [chooser.observe(t * 0.5, 1280, [300.0, 260.0]) for t in range(60)]  # 30 s of people 260 px high
    assert sides[0] == 640 and sides[9] == 640  # nothing changes before settle_s
    # then straight to the lowest side they fit: 260 px at 320 would be 65 px high, but the floor is 448
    assert sides[10:] == [448] * 50


def test_input_side_returns_to_the_fitted_side_a_settle_after_going_back_to_full():
    chooser = InputSizeChooser(640, 320, min_person_px=64, settle_s=2.0, step=64)
    for t in range(10):
        chooser.observe(t * 0.5, 1280, [300.0, 300.0])
    assert chooser.side == 320  # 300 px at 320 is 75 px high
    assert chooser.observe(5.0, 1280, [300.0]) == 640  # one fewer at a reduced side
    sides = [chooser.observe(5.0 + t * 0.5, 1280, [300.0]) for t in range(1, 6)]
    assert sides == [640, 640, 640, 320, 320]  # after settle_s at the full side, back to the fitted side


def test_input_side_stops_where_the_smallest_person_would_get_too_small():
    chooser = InputSizeChooser(640, 320, min_person_px=64, settle_s=1.0, step=64)
    for t in range(40):
        side = chooser.observe(float(t), 1280, [210.0])
    assert side == 448  # 210 px at 384 would be 63 px high in the input: too small


def test_input_side_goes_back_to_full_on_a_small_person_a_missed_one_or_an_empty_room():
    chooser = InputSizeChooser(640, 320, min_person_px=64, settle_s=1.0)
    for t in range(20):
        chooser.observe(float(t), 1280, [400.0, 400.0])
    assert chooser.side == 320
    assert chooser.observe(20.0, 1280, [400.0, 400.0, 120.0]) == 640  # somebody far away
    chooser = InputSizeChooser(640, 320, min_person_px=64, settle_s=1.0)
    for t in range(20):
        chooser.observe(float(t), 1280, [400.0, 400.0])
    assert chooser.observe(20.0, 1280, [400.0]) == 640  # one fewer at a reduced side: maybe missed
    chooser = InputSizeChooser(640, 320, min_person_px=64, settle_s=1.0, window_s=10.0)
    for t in range(20):
        chooser.observe(float(t), 1280, [400.0])
    assert chooser.side == 320
    for t in range(20, 40):
        chooser.observe(float(t), 1280, [])
    assert chooser.side == 640  # nobody seen for the whole window: the next person's size is unknown


def test_input_side_must_be_multiples_of_32():
    with pytest.raises(ValueError):
        InputSizeChooser(640, 300)


def person(x: float, y: float, height: float = 240.0) -> PersonDetection:
    return PersonDetection(box=(x - 40.0, y - height, x + 40.0, y), score=0.8, class_id=0)


def test_coasted_frames_keep_the_seen_and_age_the_missed():
    """Someone seated, seen by the detector once every 2 s and coasted in between, stays one active
    track. Someone the detector missed at its runs is unseen in the coasted frames too (they are the frame
    it ran on, unchanged): lost at the second missed run past lost_after_s and gone after reacquire_s,
    as without coasting (a person hidden behind another must be lost, to be reacquired as themselves)."""
    tracker = PersonTracker("room", fps=5.0)
    for n in range(5):
        tracker.update(n * 0.2, [person(600, 500), person(900, 500)])
    events = []
    t = 1.0
    for _ in range(5):  # 10 s: a run every 2 s with only the first person seen, coasted frames between
        events += tracker.update(t, [person(600, 500)])
        for k in range(1, 10):
            tracker.coast(t + k * 0.2)
        t += 2.0
    by_x = {round((tr.box[0] + tr.box[2]) / 2): tr for tr in tracker.open_tracks}
    assert set(by_x) == {600} and by_x[600].state == "active" and by_x[600].last_pts_s == pytest.approx(t - 0.2)
    assert [(e.kind, e.pts_s) for e in events] == [("lost", 3.0), ("exited", 7.0)], events
    assert tracker.coasted == 45


def test_without_coasting_the_same_misses_lose_the_track():
    tracker = PersonTracker("room", fps=5.0)
    for n in range(5):
        tracker.update(n * 0.2, [person(600, 500), person(900, 500)])
    events = []
    t = 1.0
    for _ in range(5):
        events += tracker.update(t, [person(600, 500)])
        t += 2.0
    assert "lost" in [e.kind for e in events]


class CountingDetector:
    def __init__(self):
        self.calls: list[tuple[int, list | None]] = []
        self.input_side, self.fit_to_frame = 640, True

    def detect(self, images, sides=None):
        self.calls.append((len(images), list(sides) if sides is not None else None))
        return [[PersonDetection(SEATED, 0.9, 0)] for _ in images]


def _gated_config():
    """The example config with motion gating and the adaptive input on (as by default)."""
    config = load_config(EXAMPLE_CONFIG, environ={})
    return config.model_copy(update={"tracking": config.tracking.model_copy(
        update={"motion_gating": True, "adaptive_input": True})})


def test_the_person_stage_detects_only_what_the_gates_plan():
    config = _gated_config()
    detector = CountingDetector()
    gating = RoomGating(config, 640)
    stage = PersonStage(detector, gating=gating)
    camera = next(c.id for c in config.cameras if c.role == "room")
    results = []
    for n in range(15):
        frame = Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, room([SEATED]))
        results += stage.process([frame])
        gating.observe(camera, [SEATED], faces_wanted=False)
    detected = [r[1] is not None for r in results]
    assert detected[0] and detected[10] and sum(detected) == 2  # the first frame, then max_skip_s later
    assert stage.detected == 2 and stage.coasted == 13
    assert detector.calls == [(1, None), (1, None)]  # at the detector's own side: no people seen long enough
    assert all(r[1] is None for r, d in zip(results, detected) if not d)


def test_a_reduced_input_side_is_only_for_frames_without_anybody_new():
    """The input side is chosen from the people already seen: a frame that may show somebody else (motion
    where no track is, the frame after it, the first one) or a new track's first frames are detected at
    the full side."""
    config = _gated_config()
    camera = next(c.id for c in config.cameras if c.role == "room")
    gating = RoomGating(config, 640)
    gating.camera(camera).sizes.side = 384  # as if every person seen so far were large
    plans = [gating.plan(Frame(camera, 0, 0.0, 1000.0, room([SEATED])))]
    gating.observe(camera, [SEATED], faces_wanted=False)
    far = (100, 200, 140, 300)  # a far, small person where no track is
    for n, people in enumerate([[SEATED], [SEATED, far]] + [[SEATED, far]] * 12, start=1):
        plans.append(gating.plan(Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, room(people))))
    assert [(p.reason, p.side) for p in plans[:4]] == [("first", None), ("still", 384), ("free", None),
                                                        ("follow", None)]
    max_skip = next(p for p in plans if p.reason == "max_skip")  # nothing new since the last run
    assert max_skip.side == 384
    gating.observe(camera, [SEATED, far], faces_wanted=False, hold_until=100.0)  # a new track settling
    held = gating.plan(Frame(camera, 20, 4.0, 1004.0, room([SEATED, far])))
    assert (held.reason, held.side) == ("held", None)


def test_a_known_person_moving_or_missed_is_detected_at_the_reduced_side():
    """Nobody new: a tracked person moving inside their box, the frame after it, and the frames watched for a
    track the detector missed use the chosen side; an arrival's hold keeps the full side."""
    config = _gated_config()
    camera = next(c.id for c in config.cameras if c.role == "room")
    gating = RoomGating(config, 640)
    gating.camera(camera).sizes.side = 384
    gating.plan(Frame(camera, 0, 0.0, 1000.0, room([SEATED])))
    gating.observe(camera, [SEATED], faces_wanted=False)
    leaning = room([SEATED])
    leaning[320:440, 612:688] = 250  # a third of the seated person's box changed, nothing outside it
    plans = [gating.plan(Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, leaning)) for n in (1, 2, 3)]
    assert [(p.reason, p.side) for p in plans] == [("track", 384), ("follow_track", 384), ("still", 384)]
    gating.observe(camera, [SEATED], faces_wanted=False, watch_until=1.3)  # the detector missed the track
    assert [(p.reason, p.side) for p in (gating.plan(Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, leaning))
                                         for n in (4, 5, 6, 7))] == [("missed", 384)] * 3 + [("still", 384)]
    far = (100, 200, 140, 300)  # while a track is watched, somebody where no track is: the full side
    gating.observe(camera, [SEATED], faces_wanted=False, watch_until=1.9)
    assert (lambda p: (p.reason, p.side))(gating.plan(Frame(camera, 8, 1.6, 1001.6, room([SEATED, far])))) == (
        "free", None)
    gating.observe(camera, [SEATED], faces_wanted=False, hold_until=2.0)  # a new track: an arrival
    assert (lambda p: (p.reason, p.side))(gating.plan(Frame(camera, 9, 1.8, 1001.8, leaning))) == ("held", None)


def _room_stage(gallery, gating: RoomGating) -> RoomStage:
    return RoomStage(_gated_config(), publish=lambda *a, **k: True, topic="presence",
                     recognitions=asyncio.Queue(), gallery=lambda: gallery, gating=gating)


@pytest.mark.parametrize("enrolled, decided, wanted", [(0, False, False), (2, False, True), (2, True, False)])
def test_room_faces_are_wanted_only_for_undecided_tracks_with_a_gallery(enrolled, decided, wanted):
    config = _gated_config()
    camera = next(c.id for c in config.cameras if c.role == "room")
    gating = RoomGating(config, 640)
    stage = _room_stage(list(range(enrolled)), gating)  # a gallery of ``enrolled`` people (only its size counts)
    for n in range(4):
        stage.handle([(Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, room([SEATED])), [PersonDetection(SEATED, 0.9, 0)],
                       [])])
    assert len(stage.live) == 1
    for live in stage.live.values():
        live.face_decided = decided
    stage.handle([(Frame(camera, 4, 0.8, 1000.8, room([SEATED])), None, [])])  # a coasted frame
    assert gating.faces_wanted(camera) is wanted
    assert gating.camera(camera).gate.boxes == (SEATED,)  # the gate knows where the track is


def test_the_sides_built_ahead_are_every_side_the_chooser_may_pick():
    """`rollcall models quantize --person` builds the int8 variants of these sides: a side the chooser can
    step to but that was not built would be quantised while the cameras wait."""
    assert possible_sides(640, 320) == [640, 576, 512, 448, 384, 320]
    assert possible_sides(640, 352) == [640, 576, 512, 448, 384, 352]  # the floor, though off the step
    assert possible_sides(320, 640) == [320]
    chooser = InputSizeChooser(640, 320, min_person_px=16.0, settle_s=0.0, window_s=5.0)
    picked = {chooser.side}
    for t in range(40):  # tall people only: the chooser goes down to its floor
        picked.add(chooser.observe(float(t), 1280, [600.0]))
    assert picked <= set(possible_sides(640, 320)) and 320 in picked, picked
