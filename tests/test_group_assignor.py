"""The processor group's camera assignor (processor/group/assignor.py): a cost-weighted, sticky split of
camera slots over the group's members, and the aiokafka assignor class that carries it (pure: a fake
cluster, no broker)."""

from __future__ import annotations

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from processor.group.assignor import PROTOCOL, Member, balance, decode_metadata, encode_metadata, make_assignor, standbys

# A typical campus: 4 room cameras (person detection: cost 3) in slots 0-3, 4 door cameras (cost 1) in 4-7.
COSTS = {0: 3.0, 1: 3.0, 2: 3.0, 3: 3.0, 4: 1.0, 5: 1.0, 6: 1.0, 7: 1.0}
SLOTS = range(8)


def loads(split: dict[str, list[int]], costs=COSTS) -> dict[str, float]:
    return {mid: sum(costs.get(s, 0.0) for s in slots) for mid, slots in split.items()}


def members(split: dict[str, list[int]], capacity: dict[str, float] | None = None) -> list[Member]:
    """The members as they report themselves after ``split`` (each one's slots), for the next rebalance."""
    return [Member(mid, (capacity or {}).get(mid, 1.0), frozenset(slots)) for mid, slots in split.items()]


def assert_partition(split: dict[str, list[int]], slots) -> None:
    """Every slot goes to exactly one member."""
    given = [s for owned in split.values() for s in owned]
    assert sorted(given) == sorted(set(slots))


# ------------------------------------------------------------------------------------------ balance

def test_two_members_get_equal_cost():
    split = balance(SLOTS, COSTS, [Member("a"), Member("b")])
    assert_partition(split, SLOTS)
    assert loads(split) == {"a": 8.0, "b": 8.0}


def test_three_members_are_within_one_camera_of_each_other():
    split = balance(SLOTS, COSTS, [Member("a"), Member("b"), Member("c")])
    assert_partition(split, SLOTS)
    load = loads(split).values()
    assert max(load) - min(load) <= max(COSTS.values())


def test_no_members_no_split():
    assert balance(SLOTS, COSTS, []) == {}


def test_rebalance_with_the_same_members_moves_nothing():
    first = balance(SLOTS, COSTS, [Member("a"), Member("b"), Member("c")])
    assert balance(SLOTS, COSTS, members(first)) == first


def test_rebalance_with_equal_cost_ties_moves_nothing():
    # Found by a randomised search: slots 0 and 8 (cost 1) tie on m0, 4 and 9 on m1; the first split gave
    # m0 slot 8 and m1 slot 4, the rebalance swaps them although nobody joined or left.
    costs = {0: 1, 1: 3, 2: 0, 3: 0, 4: 1, 5: 3, 6: 3, 7: 1, 8: 1, 9: 1}
    first = balance(range(10), costs, [Member("m0"), Member("m1"), Member("m2")])
    assert balance(range(10), costs, members(first)) == first


def test_a_dead_members_slots_go_to_the_survivors_who_keep_theirs():
    first = balance(SLOTS, COSTS, [Member("a"), Member("b"), Member("c")])
    survivors = [m for m in members(first) if m.member_id != "c"]
    second = balance(SLOTS, COSTS, survivors)
    assert set(second) == {"a", "b"}
    assert_partition(second, SLOTS)
    for mid in ("a", "b"):
        assert set(first[mid]) <= set(second[mid])  # nothing of theirs moved
    assert loads(second) == {"a": 8.0, "b": 8.0}


def test_a_new_member_takes_a_share_from_the_most_loaded_and_others_keep_the_rest():
    first = balance(SLOTS, COSTS, [Member("a"), Member("b")])
    second = balance(SLOTS, COSTS, members(first) + [Member("c")])
    assert_partition(second, SLOTS)
    load = loads(second)
    assert load["c"] > 0
    assert max(load.values()) - min(load.values()) <= max(COSTS.values())
    for mid in ("a", "b"):
        assert set(second[mid]) <= set(first[mid])  # they only gave slots away
        assert load[mid] < 8.0  # and each gave some: both were the most loaded


def test_the_new_member_takes_from_the_most_loaded_member():
    # a runs 9, b runs 3: the newcomer relieves a, b keeps everything it had
    costs = {0: 3.0, 1: 3.0, 2: 3.0, 3: 3.0}
    old = [Member("a", slots=frozenset({0, 1, 2})), Member("b", slots=frozenset({3}))]
    split = balance(range(4), costs, old + [Member("c")])
    assert split["b"] == [3]
    assert len(split["c"]) == 1 and split["c"][0] in {0, 1, 2}
    assert set(split["a"]) < {0, 1, 2}


def test_capacity_two_gets_about_twice_the_cost():
    costs = {s: 1.0 for s in range(12)}
    split = balance(range(12), costs, [Member("big", capacity=2.0), Member("small")])
    assert loads(split, costs) == {"big": 8.0, "small": 4.0}


def test_capacity_is_kept_in_a_sticky_rebalance():
    costs = {s: 1.0 for s in range(12)}
    capacity = {"big": 2.0, "small": 1.0}
    first = balance(range(12), costs, [Member("big", 2.0), Member("small")])
    assert balance(range(12), costs, members(first, capacity)) == first


def test_empty_slots_are_all_dealt_round_robin_lowest_first_to_the_least_loaded():
    # a's 5 against b's 3: b is the least loaded, so it gets the lowest empty slot (where the next camera goes)
    costs = {0: 5.0, 1: 3.0}  # slots 2-6: no camera yet (absent, or cost 0 for slot 6)
    costs[6] = 0.0
    split = balance(range(7), costs, [Member("a"), Member("b")])
    assert_partition(split, range(7))
    assert split == {"a": [0, 3, 5], "b": [1, 2, 4, 6]}


def test_empty_slots_only_are_spread_evenly():
    split = balance(range(6), {}, [Member("a"), Member("b"), Member("c")])
    assert split == {"a": [0, 3], "b": [1, 4], "c": [2, 5]}


def test_a_slot_reported_twice_has_one_owner():
    # a stale member still reports slot 0 after it moved: one of them runs it, never both
    split = balance(SLOTS, COSTS, [Member("a", slots=frozenset({0})), Member("b", slots=frozenset({0}))])
    assert_partition(split, SLOTS)


# ------------------------------------------------------------------------------------------ metadata

def test_metadata_round_trip():
    member = decode_metadata("m-1", encode_metadata([5, 1, 3], 2.5, "proc-a"))
    assert member == Member("m-1", 2.5, frozenset({1, 3, 5}))


@pytest.mark.parametrize("data", [
    b"\xff\xfe garbage",
    b"not json",
    b"[1, 2]",  # json, but not an object
    b"null",
    b'{"slots": [1], "capacity": -1}',
    b'{"slots": [1], "capacity": 0}',
    b'{"slots": [1], "capacity": "lots"}',
    b'{"slots": ["x"], "capacity": 1}',
    b'{"slots": 7, "capacity": 1}',
])
def test_unreadable_metadata_is_a_new_member_of_capacity_one(data):
    assert decode_metadata("m-1", data) == Member("m-1", 1.0, frozenset())


def test_no_metadata_is_a_new_member():
    assert decode_metadata("m-1", None) == Member("m-1", 1.0, frozenset())
    assert decode_metadata("m-1", b"") == Member("m-1", 1.0, frozenset())


# ------------------------------------------------------------------------------------------ aiokafka class

class FakeCluster:
    def __init__(self, partitions: dict[str, set[int]]):
        self.partitions = partitions

    def partitions_for_topic(self, topic):
        return self.partitions.get(topic)


def assigned_slots(assignment: ConsumerProtocolMemberAssignment, topic: str) -> list[int]:
    return sorted(p for t, ps in assignment.assignment if t == topic for p in ps)


def test_assignor_metadata_carries_the_last_assignment():
    seen: list[list[int]] = []
    cls = make_assignor("control", name="proc-a", capacity=2.0, costs=dict, on_assigned=seen.append)
    assert cls.name == PROTOCOL
    assert decode_metadata("x", cls.metadata(["control"]).user_data) == Member("x", 2.0, frozenset())
    cls.on_assignment(ConsumerProtocolMemberAssignment(0, [("control", [4, 2]), ("other", [9])], b""))
    assert seen == [[2, 4]]
    metadata = cls.metadata(["control"])
    assert metadata.subscription == ["control"]
    assert decode_metadata("x", metadata.user_data) == Member("x", 2.0, frozenset({2, 4}))


def test_each_made_assignor_keeps_its_own_slots():
    # aiokafka uses assignors as classes: two members in one process must not share state
    a = make_assignor("control", name="a", capacity=1.0, costs=dict)
    b = make_assignor("control", name="b", capacity=1.0, costs=dict)
    a.on_assignment(ConsumerProtocolMemberAssignment(0, [("control", [1])], b""))
    assert decode_metadata("b", b.metadata(["control"]).user_data).slots == frozenset()


def test_assignor_assign_splits_by_cost_and_stays_sticky():
    cls = make_assignor("control", name="proc-a", capacity=1.0, costs=lambda: COSTS)
    cluster = FakeCluster({"control": set(SLOTS)})
    meta = {mid: ConsumerProtocolMemberMetadata(0, ["control"], encode_metadata([], 1.0, mid)) for mid in "ab"}
    first = {mid: assigned_slots(a, "control") for mid, a in cls.assign(cluster, meta).items()}
    assert_partition(first, SLOTS)
    assert loads(first) == {"a": 8.0, "b": 8.0}
    # next generation: each reports what it got, a third member with garbage metadata joins
    meta = {mid: ConsumerProtocolMemberMetadata(0, ["control"], encode_metadata(first[mid], 1.0, mid))
            for mid in "ab"}
    meta["c"] = ConsumerProtocolMemberMetadata(0, ["control"], b"\x00garbage")
    second = {mid: assigned_slots(a, "control") for mid, a in cls.assign(cluster, meta).items()}
    assert_partition(second, SLOTS)
    assert second["c"]  # the garbage member counts as a new one, and takes a share
    assert set(second["a"]) <= set(first["a"]) and set(second["b"]) <= set(first["b"])


def test_assignor_assign_without_the_topic_gives_everyone_nothing():
    cls = make_assignor("control", name="proc-a", capacity=1.0, costs=lambda: COSTS)
    meta = {"a": ConsumerProtocolMemberMetadata(0, ["control"], encode_metadata([], 1.0, "a"))}
    result = cls.assign(FakeCluster({}), meta)
    assert assigned_slots(result["a"], "control") == []


# ------------------------------------------------------------------------------ standby replicas

def test_each_room_slot_gets_a_standby_on_another_member_and_keeps_it():
    costs = {0: 3.0, 1: 1.0, 2: 3.0, 3: 1.0}
    members = [Member("m0"), Member("m1"), Member("m2")]
    split = balance(range(8), costs, members)
    spare = standbys(split, costs, [0, 2], members)
    owner = {s: m for m, slots in split.items() for s in slots}
    for slot in (0, 2):
        holders = [m for m, slots in spare.items() if slot in slots]
        assert len(holders) == 1 and holders[0] != owner[slot]
    # reported back, the standbys stay where they are on the next rebalance
    again = [Member(m, 1.0, frozenset(split[m]), frozenset(spare[m])) for m in ("m0", "m1", "m2")]
    assert standbys(balance(range(8), costs, again), costs, [0, 2], again) == spare


def test_no_standby_in_a_group_of_one():
    assert standbys({"m0": [0, 1]}, {0: 3.0}, [0], [Member("m0")]) == {"m0": []}


def test_a_dead_owners_room_goes_to_its_standby():
    costs = {0: 3.0, 1: 1.0, 2: 1.0}
    # m0 ran slot 0 and died; m2 kept the standby of slot 0, m1 is lighter
    members = [Member("m1", 1.0, frozenset({1, 2})), Member("m2", 1.0, frozenset(), frozenset({0}))]
    split = balance(range(4), costs, members)
    assert 0 in split["m2"]
