"""Door-to-room handoff (processor.handoff): pure logic, deterministic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processor import appearance
from processor.handoff import Door, HandoffMatcher
from infra.foundation.config import DoorConfig

DOOR = ("door-a", "door-cam-a", "room-cam-a", 1.0, 12.0, 4.0)  # window 1-12 s, typical transit 4 s
LATE = 40.0  # every window of these tests is closed by then


def matcher(**kwargs) -> HandoffMatcher:
    return HandoffMatcher([DOOR], **kwargs)


def by_track(assignments):
    return {a.track_id: a for a in assignments}


def test_one_person_is_assigned_once_the_window_closes():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", 14.0, (100.0, 200.0))
    assert m.assign(15.0) == []  # another entry could still pair with the recognition until 10 + 12
    [a] = m.assign(23.0)
    assert (a.track_id, a.person_id, a.recognition_event_id, a.door_id, a.ambiguous) == \
        ("t1", "alice", "rec-1", "door-a", False)
    assert a.transit_s == pytest.approx(4.0) and a.reason == "handoff"
    assert m.assign(LATE) == []  # decided once
    assert m.live_tracks("room-cam-a") == {"t1": "alice"}


def test_door_camera_id_names_the_door_and_default_typical_is_the_middle():
    m = HandoffMatcher([DOOR[:5]])
    m.add_recognition("door-cam-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    assert by_track(m.assign(LATE))["t1"].person_id == "alice"


def test_two_people_one_second_apart_keep_their_order():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_recognition("door-a", "bob", "rec-b", 11.0)
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 15.0)
    got = by_track(m.assign(LATE))
    assert got["t1"].person_id == "alice" and got["t2"].person_id == "bob"
    assert not got["t1"].ambiguous and not got["t2"].ambiguous


def test_order_decides_when_the_transit_deviation_ties():
    m = HandoffMatcher([DOOR[:5]])  # typical 6.5 s: both pairings deviate by 5 s in total
    m.add_recognition("door-a", "bob", "rec-b", 11.0)  # added out of order on purpose
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_entry("door-a", "t2", 15.5)
    m.add_entry("door-a", "t1", 14.0)
    got = by_track(m.assign(LATE))
    assert (got["t1"].person_id, got["t2"].person_id) == ("alice", "bob")


def test_visitor_between_two_known_people():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_recognition("door-a", None, "rec-v", 11.5)
    m.add_recognition("door-a", "bob", "rec-b", 13.0)
    m.add_entry("door-a", "t1", 14.1)
    m.add_entry("door-a", "t2", 15.4)
    m.add_entry("door-a", "t3", 17.0)
    got = by_track(m.assign(LATE))
    assert [got[t].person_id for t in ("t1", "t2", "t3")] == ["alice", None, "bob"]
    assert got["t2"].recognition_event_id == "rec-v" and got["t2"].reason == "unknown_recognition"
    assert not any(a.ambiguous for a in got.values())


def test_tailgater_clearly_behind_gets_unknown():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 17.0)  # followed 3 s later, face never seen at the door
    got = by_track(m.assign(LATE))
    assert got["t1"].person_id == "alice" and not got["t1"].ambiguous
    assert got["t2"].person_id is None and got["t2"].reason == "no_recognition" and not got["t2"].ambiguous
    assert sum(a.person_id is not None for a in got.values()) == 1


def test_tailgater_nearly_simultaneous_is_ambiguous():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 14.4)
    got = by_track(m.assign(LATE))
    for track in ("t1", "t2"):
        assert got[track].person_id is None and got[track].ambiguous and got[track].recognition_event_id is None
    assert m.live_tracks("room-cam-a") == {"t1": None, "t2": None}


def test_two_people_through_the_door_together_are_ambiguous():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_recognition("door-a", "bob", "rec-b", 10.2)
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 16.0)
    got = by_track(m.assign(LATE))
    assert all(a.ambiguous and a.person_id is None for a in got.values())


def test_two_unknown_visitors_together_are_not_ambiguous():
    m = matcher()
    m.add_recognition("door-a", None, "rec-1", 10.0)
    m.add_recognition("door-a", None, "rec-2", 10.1)
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 14.1)
    got = by_track(m.assign(LATE))
    assert all(not a.ambiguous and a.person_id is None and a.recognition_event_id for a in got.values())


def test_no_identity_to_two_live_tracks_until_the_first_exits():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    assert by_track(m.assign(LATE))["t1"].person_id == "alice"
    m.add_recognition("door-a", "alice", "rec-2", 50.0)  # recognised again while t1 is still live
    m.add_entry("door-a", "t2", 54.0)
    [a] = m.assign(80.0)
    assert a.track_id == "t2" and a.person_id is None and a.reason == "already_present"
    assert a.recognition_event_id == "rec-2"  # it took its own track, nobody else's identity
    m.track_exited("t1")
    m.add_recognition("door-a", "alice", "rec-3", 100.0)
    m.add_entry("door-a", "t3", 104.0)
    [a] = m.assign(130.0)
    assert a.track_id == "t3" and a.person_id == "alice"
    assert m.live_tracks("room-cam-a") == {"t2": None, "t3": "alice"}


def test_duplicate_recognitions_of_one_person_become_one():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-1", 9.5)
    m.add_recognition("door-a", "alice", "rec-2", 10.0)  # the door camera split her face track
    m.add_entry("door-a", "t1", 14.0)
    m.add_entry("door-a", "t2", 20.0)
    got = by_track(m.assign(LATE))
    assert got["t1"].person_id == "alice" and got["t1"].recognition_event_id == "rec-2"
    assert got["t2"].person_id is None


@pytest.mark.parametrize("entry_time", [10.5, 22.5])  # transit 0.5 s and 12.5 s, window 1-12 s
def test_entry_outside_the_transit_window_is_unknown(entry_time):
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", entry_time)
    [a] = m.assign(LATE)
    assert a.person_id is None and a.recognition_event_id is None and a.reason == "no_recognition"
    assert not a.ambiguous


def test_entry_without_recognition_is_decided_when_its_own_window_closes():
    m = matcher(settle_s=0.5, recognition_delay_s=2.0)
    m.add_entry("door-a", "t1", 14.0)
    assert m.assign(14.9) == []  # a recognition with door time <= 13 may still be on its way
    [a] = m.assign(15.0)
    assert a.person_id is None and a.reason == "no_recognition"


def test_unmatched_recognition_expires():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    assert m.assign(LATE) == [] and m.expired_recognitions == 1


def test_doors_are_separate_and_rooms_are_separate():
    m = HandoffMatcher([DOOR, ("door-b", "door-cam-b", "room-cam-b", 1.0, 12.0, 4.0)])
    m.add_recognition("door-a", "alice", "rec-a", 10.0)
    m.add_recognition("door-b", "bob", "rec-b", 10.0)
    m.add_entry("door-b", "t1", 14.0)
    m.add_entry("door-a", "t1", 14.0)  # the same track id on another room camera
    got = {(a.room_camera, a.track_id): a.person_id for a in m.assign(LATE)}
    assert got == {("room-cam-a", "t1"): "alice", ("room-cam-b", "t1"): "bob"}


def test_bad_input():
    with pytest.raises(ValueError):
        HandoffMatcher([("d", "dc", "rc", 5.0, 2.0)])
    with pytest.raises(KeyError):
        matcher().add_entry("nowhere", "t1", 1.0)
    m = matcher()
    m.add_entry("door-a", "t1", 1.0)
    with pytest.raises(ValueError):
        m.add_entry("door-a", "t1", 2.0)


def test_doorconfig_objects_are_accepted():

    door = DoorConfig(id="door-a", room="r1", door_camera="door-cam-a", room_camera="room-cam-a",
                      entry_zone=[(0, 0), (1, 0), (1, 1)], transit={"min_s": 1.0, "max_s": 12.0})
    m = HandoffMatcher([door])
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    assert m.assign(LATE)[0].person_id == "alice"


# ------------------------------------------------------------------ appearance, order and side cues
def _look(colour_bgr, *, gain: float = 1.0, size: int = 120):
    """A person's descriptor as a room camera would compute it: a figure in a shirt of ``colour`` and
    dark trousers on a grey wall, ``size`` px tall, lit by ``gain``."""
    image = np.full((size + 40, size, 3), 128, np.uint8)
    x1, x2 = size // 4, 3 * size // 4
    cv2.rectangle(image, (x1, 20), (x2, 20 + size // 2), [int(c * gain) for c in colour_bgr], -1)
    cv2.rectangle(image, (x1, 20 + size // 2), (x2, 20 + size), [int(40 * gain)] * 3, -1)
    return appearance.describe_person(image, (x1, 20, x2, 20 + size))


def _door_look(colour_bgr, *, gain: float = 0.8):
    """The door camera's descriptor: a face box with the shirt below it, under other lighting."""
    image = np.full((400, 300, 3), 200, np.uint8)
    cv2.rectangle(image, (110, 60), (190, 160), (120, 150, 200), -1)  # the face
    cv2.rectangle(image, (60, 170), (240, 400), [int(c * gain) for c in colour_bgr], -1)
    return appearance.describe_below_face(image, (110, 60, 190, 160))


RED, BLUE, GREEN, ORANGE = (40, 40, 200), (200, 80, 30), (60, 170, 60), (30, 120, 230)


def test_a_pair_side_by_side_with_equal_transit_gets_its_identities_from_clothing():
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_recognition("door-a", "bob", "rec-b", 10.3, appearance=_door_look(BLUE))
    # into the room together: bob's track first (order would say bob = t1 = first through the door: wrong)
    m.add_entry("door-a", "t1", 14.2, appearance=_look(BLUE))
    m.add_entry("door-a", "t2", 14.3, appearance=_look(RED))
    got = by_track(m.assign(LATE))
    assert (got["t1"].person_id, got["t2"].person_id) == ("bob", "alice")
    assert not got["t1"].ambiguous and not got["t2"].ambiguous
    assert got["t1"].appearance_distance < 0.3
    assert got["t1"].margin > 10  # wholly other clothes: no swap; the next best leaves both unmatched


def test_identical_clothing_and_equal_times_are_ambiguous():
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(GREEN))
    m.add_recognition("door-a", "bob", "rec-b", 10.3, appearance=_door_look(GREEN))
    m.add_entry("door-a", "t1", 14.2, appearance=_look(GREEN))
    m.add_entry("door-a", "t2", 14.3, appearance=_look(GREEN))
    got = by_track(m.assign(LATE))
    assert all(a.ambiguous and a.person_id is None and a.reason == "ambiguous" for a in got.values())


def test_without_descriptors_on_one_side_transit_and_order_decide_as_before():
    for with_door, with_room in ((True, False), (False, True)):
        m = matcher()
        m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED) if with_door else None)
        m.add_recognition("door-a", "bob", "rec-b", 10.2, appearance=_door_look(BLUE) if with_door else None)
        m.add_entry("door-a", "t1", 14.0, appearance=_look(BLUE) if with_room else None)
        m.add_entry("door-a", "t2", 16.0, appearance=_look(RED) if with_room else None)
        got = by_track(m.assign(LATE))  # as test_two_people_through_the_door_together_are_ambiguous
        assert all(a.ambiguous and a.person_id is None for a in got.values())
        assert all(a.appearance_distance is None for a in got.values())


def test_clothing_does_not_overrule_people_clearly_apart_in_time():
    m = matcher()
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_recognition("door-a", "bob", "rec-b", 12.0, appearance=_door_look(ORANGE))
    m.add_entry("door-a", "t1", 14.0, appearance=_look(ORANGE))  # looks like bob, but came 2 s earlier
    m.add_entry("door-a", "t2", 16.0, appearance=_look(RED))
    assert 0.5 < appearance.distance(_door_look(RED), _look(ORANGE)) < 0.9  # different, not wholly
    got = by_track(m.assign(LATE))
    assert (got["t1"].person_id, got["t2"].person_id) == ("alice", "bob")


def test_a_tailgater_in_other_clothes_is_told_apart():
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_entry("door-a", "t1", 14.3, appearance=_look(BLUE))  # the tailgater, a little ahead
    m.add_entry("door-a", "t2", 14.4, appearance=_look(RED))
    got = by_track(m.assign(LATE))
    assert got["t2"].person_id == "alice" and not got["t2"].ambiguous
    assert got["t1"].person_id is None and got["t1"].reason == "no_recognition" and not got["t1"].ambiguous


def test_side_of_the_doorway_breaks_a_tie_once_the_relation_is_known():
    mirrored = HandoffMatcher([Door("door-a", "door-cam-a", "room-cam-a", 1.0, 12.0, 4.0, sides="mirrored")],
                              ambiguity_s=0.5)
    mirrored.add_recognition("door-a", "alice", "rec-a", 10.0, side="left")
    mirrored.add_recognition("door-a", "bob", "rec-b", 10.1, side="right")
    mirrored.add_entry("door-a", "t1", 14.2, side="left")
    mirrored.add_entry("door-a", "t2", 14.3, side="right")
    got = by_track(mirrored.assign(LATE))
    assert (got["t1"].person_id, got["t2"].person_id) == ("bob", "alice")
    # the same tie at a door whose relation is neither configured nor learnt yet: ambiguous
    m = matcher(ambiguity_s=0.5)
    assert m.side_relation("door-a") is None
    m.add_recognition("door-a", "alice", "rec-a", 10.0, side="left")
    m.add_recognition("door-a", "bob", "rec-b", 10.1, side="right")
    m.add_entry("door-a", "t1", 14.2, side="left")
    m.add_entry("door-a", "t2", 14.3, side="right")
    assert all(a.ambiguous for a in m.assign(LATE))


def test_side_relation_is_learnt_from_unambiguous_handoffs():
    m = matcher(ambiguity_s=0.5, min_side_votes=3)
    t = 0.0
    for k, (door_side, room_side) in enumerate((("left", "right"), ("right", "left"), ("left", "right"))):
        t += 30.0
        m.add_recognition("door-a", f"p{k}", f"rec-{k}", t, side=door_side)
        m.add_entry("door-a", f"t{k}", t + 4.0, side=room_side)
        assert m.assign(t + 25.0)[0].person_id == f"p{k}"
        m.track_exited(f"t{k}")
    assert m.side_relation("door-a") == "mirrored"
    m.add_recognition("door-a", "alice", "rec-a", 200.0, side="left")
    m.add_recognition("door-a", "bob", "rec-b", 200.1, side="right")
    m.add_entry("door-a", "ta", 204.2, side="left")
    m.add_entry("door-a", "tb", 204.3, side="right")
    got = by_track(m.assign(300.0))
    assert (got["ta"].person_id, got["tb"].person_id) == ("bob", "alice")


def test_an_entry_learns_its_appearance_while_it_waits():
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_recognition("door-a", "bob", "rec-b", 10.3, appearance=_door_look(BLUE))
    m.add_entry("door-a", "t1", 14.2)
    m.add_entry("door-a", "t2", 14.3)
    assert m.set_entry_appearance("room-cam-a", "t1", _look(BLUE, gain=0.7, size=200))
    assert m.set_entry_appearance("room-cam-a", "t2", _look(RED, gain=0.7, size=200))
    got = by_track(m.assign(LATE))
    assert (got["t1"].person_id, got["t2"].person_id) == ("bob", "alice")
    assert not m.set_entry_appearance("room-cam-a", "t1", _look(BLUE))  # decided: no longer pending


def test_bad_side_is_refused():
    with pytest.raises(ValueError, match="side"):
        matcher().add_entry("door-a", "t1", 1.0, side="middle")


def test_typical_transit_is_learnt_from_confident_handoffs():
    m = matcher(ambiguity_s=0.5)  # configured typical 4 s; people really take 6 s
    for k in range(3):
        m.add_recognition("door-a", f"p{k}", f"rec-{k}", 30.0 * k)
        m.add_entry("door-a", f"t{k}", 30.0 * k + 6.0)
        assert m.assign(30.0 * k + 25.0)[0].person_id == f"p{k}"
    assert m.typical_transit("door-a") == pytest.approx(6.0)
    # now a stream 1 s apart with a recognition that never enters (someone turned back at the door):
    # with a typical of 4 s each entry would rather take the next, later recognition (transit 5 s)
    for k, who in enumerate(["alice", "turned-back", "bob", "carol"]):
        m.add_recognition("door-a", who, f"rec-{who}", 200.0 + k)
    for k, who in enumerate(["alice", None, "bob", "carol"]):
        if who:
            m.add_entry("door-a", f"t-{who}", 206.0 + k)
    got = by_track(m.assign(300.0))
    assert {t: a.person_id for t, a in got.items()} == {"t-alice": "alice", "t-bob": "bob", "t-carol": "carol"}
    # an ambiguous or unconfident decision teaches nothing
    m2 = matcher(ambiguity_s=0.5, min_transit_samples=1)
    m2.add_recognition("door-a", "alice", "rec-a", 10.0)
    m2.add_entry("door-a", "t1", 17.0)
    m2.add_entry("door-a", "t2", 17.2)
    assert all(a.ambiguous for a in m2.assign(LATE)) and m2.typical_transit("door-a") == 4.0


def test_a_recognition_is_not_handed_to_someone_in_wholly_other_clothes():
    # alice was recognised but turned back at the door; bob walked in unrecognised (face turned away)
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_entry("door-a", "t-bob", 14.0, appearance=_look(BLUE))
    [a] = m.assign(LATE)
    assert a.person_id is None and a.reason == "no_recognition" and not a.ambiguous
    assert m.expired_recognitions == 0  # decided with the group (nobody took it), not expired on its own
    # the same entry without a descriptor takes the recognition, as before
    m = matcher(ambiguity_s=0.5)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_entry("door-a", "t-bob", 14.0)
    assert m.assign(LATE)[0].person_id == "alice"


def test_a_stream_that_could_be_shifted_by_one_is_ambiguous_all_along():
    # three recognised, four walked in a second apart: the unrecognised one may be any of them, and no
    # single exchange of two tracks shows it (shifting everyone by one does)
    m = HandoffMatcher([("door-a", "door-cam-a", "room-cam-a", 1.0, 12.0, 7.5)], ambiguity_s=0.5)
    for k, who in enumerate(["alice", "bob", "carol"]):
        m.add_recognition("door-a", who, f"rec-{who}", 10.0 + k)
    for k in range(4):
        m.add_entry("door-a", f"t{k}", 17.0 + k)
    got = by_track(m.assign(LATE))
    assert all(a.person_id is None and a.ambiguous for a in got.values()), got


# ------------------------------------------------------------------ abstentions asked again
def _torn_pair(**kwargs) -> HandoffMatcher:
    """alice and bob through the door together, their tracks into the room together, seen only in a
    crowd (no room descriptor) when the window closes: ambiguous."""
    m = matcher(ambiguity_s=0.5, **kwargs)
    m.add_recognition("door-a", "alice", "rec-a", 10.0, appearance=_door_look(RED))
    m.add_recognition("door-a", "bob", "rec-b", 10.2, appearance=_door_look(BLUE))
    m.add_entry("door-a", "t1", 14.2)
    m.add_entry("door-a", "t2", 14.3)
    first = by_track(m.assign(LATE))
    assert all(a.ambiguous and a.person_id is None for a in first.values())
    return m


def test_an_ambiguous_pair_is_decided_once_its_tracks_are_seen_apart():
    m = _torn_pair()
    assert m.is_pending("t1") and m.is_pending("t2"), "its question is open: keep describing the tracks"
    assert m.assign(LATE + 1) == [], "nothing new seen: not asked again"
    assert m.set_entry_appearance("room-cam-a", "t1", _look(BLUE, gain=0.7, size=200))
    assert m.set_entry_appearance("room-cam-a", "t2", _look(RED, gain=0.7, size=200))
    got = by_track(m.assign(LATE + 2))
    assert (got["t1"].person_id, got["t2"].person_id) == ("bob", "alice")
    assert all(a.late and not a.ambiguous and a.reason == "handoff" for a in got.values())
    assert m.live_tracks("room-cam-a") == {"t1": "bob", "t2": "alice"}
    assert not m.is_pending("t1") and m.assign(LATE + 3) == []


def test_an_ambiguous_pair_that_still_looks_alike_stays_unknown():
    m = _torn_pair()
    m.set_entry_appearance("room-cam-a", "t1", _look(GREEN))
    m.set_entry_appearance("room-cam-a", "t2", _look(GREEN))
    assert m.assign(LATE + 1) == []
    assert m.live_tracks("room-cam-a") == {"t1": None, "t2": None}


def test_one_track_seen_apart_decides_the_pair_and_a_person_is_not_given_twice():
    m = _torn_pair()
    m.set_entry_appearance("room-cam-a", "t2", _look(RED, gain=0.7, size=200))
    got = by_track(m.assign(LATE + 1))
    assert {t: a.person_id for t, a in got.items()} == {"t1": "bob", "t2": "alice"}
    m2 = _torn_pair()
    m2.set_identity("room-cam-a", "t1", "alice")  # meanwhile the room camera saw t1's face: alice
    m2.set_entry_appearance("room-cam-a", "t2", _look(RED, gain=0.7, size=200))
    got = by_track(m2.assign(LATE + 1))
    assert got["t2"].person_id is None and got["t2"].reason == "already_present"


def test_an_open_question_ends_with_its_tracks_or_its_time():
    m = _torn_pair(reopen_s=10.0)
    m.track_exited("t1", "room-cam-a")
    m.track_exited("t2", "room-cam-a")
    m.assign(LATE + 1)
    assert not m.is_pending("t1") and not m.is_pending("t2")
    m = _torn_pair(reopen_s=10.0)
    m.set_entry_appearance("room-cam-a", "t1", _look(BLUE, gain=0.7, size=200))
    assert m.assign(LATE + 11) == [] and not m.is_pending("t1"), "asked too late: given up"
    m = _torn_pair(reopen_s=0)
    assert not m.is_pending("t1"), "reopen_s 0: abstentions are final"
