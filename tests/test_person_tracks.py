"""Room-camera track life (processor.stages.person_tracks): pure logic on scripted detections, with the
real ByteTrack underneath. Stream times are those of a camera analysed at 4 fps."""

from __future__ import annotations

from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetection

ZONE = [(0, 300), (300, 300), (300, 500), (0, 500)]  # the door's entry zone: feet in x 0-300, y 300-500
STEP = 0.25


def person(x: float, y: float, height: float = 240.0) -> PersonDetection:
    """Someone whose feet are at (x, y)."""
    return PersonDetection(box=(x - 40.0, y - height, x + 40.0, y), score=0.8, class_id=0)


def run(tracker: PersonTracker, script) -> list[tuple[str, float, str | None]]:
    """Feed (time, detections) pairs; (kind, time, exited_via or entered_via) of every event."""
    out = []
    for t, detections in script:
        for e in tracker.update(t, detections):
            out.append((e.kind, round(e.pts_s, 2), e.exited_via if e.kind == "exited" else e.entered_via))
    return out


def times(start: float, end: float):
    n = int(round((end - start) / STEP))
    return [round(start + i * STEP, 2) for i in range(n + 1)]


def test_someone_hidden_before_leaving_the_entry_zone_stays_in_the_room():
    """Two people come in together and the second is hidden behind the first while still in the door's
    zone: the hidden one is lost, not taken to have walked out, and is picked up again in the room."""
    tracker = PersonTracker("room", fps=4.0, entry_zones={"door": ZONE})
    script = [(t, [person(150, 450)]) for t in times(0.0, 1.0)]  # stands in the zone, confirmed
    script += [(t, []) for t in times(1.25, 3.5)]  # hidden for 2.5 s: lost after 2 s
    script += [(t, [person(150 + 40 * (t - 3.75), 520)]) for t in times(3.75, 5.0)]  # seen again, in the room
    events = run(tracker, script)
    kinds = [k for k, _, _ in events]
    assert kinds == ["appeared", "lost", "reacquired"], events
    assert events[0][2] == "door"
    [track] = tracker.open_tracks
    assert track.state == "active" and track.reacquisitions == 1


def test_someone_who_walks_back_out_through_the_door_exits_there():
    tracker = PersonTracker("room", fps=4.0, entry_zones={"door": ZONE})
    script = [(t, [person(150 + 160 * t, 450 + 40 * t)]) for t in times(0.0, 1.5)]  # walks in: (390, 510)
    script += [(t, [person(390 - 160 * (t - 1.75), 510 - 40 * (t - 1.75))]) for t in times(1.75, 3.25)]  # back
    script += [(t, []) for t in times(3.5, 6.0)]  # gone through the door
    events = run(tracker, script)
    assert [k for k, _, _ in events] == ["appeared", "lost", "exited"], events
    assert events[-1][2] == "door"
    assert tracker.open_tracks == []


def test_a_track_never_seen_outside_the_zone_still_ends_through_its_door():
    """Someone who steps into the zone and back out (never into the room) is lost after 2 s and, unseen
    for the re-acquisition time, exits through the door whose zone they were lost in."""
    tracker = PersonTracker("room", fps=4.0, entry_zones={"door": ZONE}, lost_after_s=2.0, reacquire_s=5.0)
    script = [(t, [person(150, 450)]) for t in times(0.0, 1.0)]
    script += [(t, []) for t in times(1.25, 7.0)]
    events = run(tracker, script)
    assert [k for k, _, _ in events] == ["appeared", "lost", "exited"], events
    assert events[1][1] >= 3.0 and events[2][1] > 6.0 and events[2][2] == "door"


def test_two_people_who_walk_past_each_other_keep_their_own_tracks():
    """A (red) and B (blue) stand apart, touch, and end up on each other's side. ByteTrack goes by box
    overlap and hands A's id to B's box; the colour each track learnt while its box stood alone gives
    each track its own person back (and nothing is learnt from boxes that overlap)."""
    import numpy as np

    red, blue = (0, 0, 220), (220, 0, 0)  # BGR

    def frame(*people):
        image = np.full((720, 1280, 3), 128, np.uint8)
        detections = []
        for x, colour in people:
            image[300:540, int(x - 40):int(x + 40)] = colour
            detections.append(person(x, 540))
        return detections, image

    tracker = PersonTracker("room", fps=4.0, entry_zones={"door": ZONE})
    script = [(t, (440, red), (560, blue)) for t in times(0.0, 1.0)]  # apart: each track learns a colour
    script += [(t, (470, red), (530, blue)) for t in times(1.25, 1.75)]  # touching
    script += [(t, (550, red), (450, blue)) for t in times(2.0, 3.0)]  # past each other, apart again
    first_ids = None
    for t, *people in script:
        detections, image = frame(*people)
        tracker.update(t, detections, image)
        if first_ids is None and len(tracker.open_tracks) == 2:
            first_ids = {round(tr.foot[0]): tr.track_id for tr in tracker.open_tracks}
    assert first_ids is not None and set(first_ids) == {440, 560}
    now = {round(tr.foot[0]): tr.track_id for tr in tracker.open_tracks}
    assert now == {550: first_ids[440], 450: first_ids[560]}, (first_ids, now)
    assert tracker.swaps_undone == 1
