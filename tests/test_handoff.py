"""Door-to-room handoff (processor.handoff): pure logic, deterministic."""

from __future__ import annotations

import pytest

from processor.handoff import HandoffMatcher

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
    from processor.config import DoorConfig

    door = DoorConfig(id="door-a", room="r1", door_camera="door-cam-a", room_camera="room-cam-a",
                      entry_zone=[(0, 0), (1, 0), (1, 1)], transit={"min_s": 1.0, "max_s": 12.0})
    m = HandoffMatcher([door])
    m.add_recognition("door-a", "alice", "rec-1", 10.0)
    m.add_entry("door-a", "t1", 14.0)
    assert m.assign(LATE)[0].person_id == "alice"
