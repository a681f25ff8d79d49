"""Which member of a processor group runs which camera slots: a cost-weighted, sticky assignment, run
by the group's leader inside Kafka's own group protocol (a custom partition assignor for aiokafka).

Each camera has a slot for life (processor/group/catalogue.py) and slot N is partition N of the control
topic. Kafka's group coordinator does the membership (who is alive, session timeouts, generations); this
module only decides the split, from what each member reports in its join metadata (the slots it runs now
and its capacity) and the leader's view of the cameras' costs:

1. every member keeps the slots it has while its load stays within its fair share (the total cost times
   its capacity over all capacities), so a rebalance moves as few cameras as it can;
2. slots nobody kept go, costliest first, to the member with the least load per capacity, except that a
   slot whose owner left the group goes to the member keeping its standby (the room's tracks are warm
   there; see :func:`standbys`);
3. empty slots (no camera yet) are dealt to the least loaded members, lowest slot first, so the next
   camera added (which takes the lowest free slot) lands where there is room.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("rollcall.group")

PROTOCOL = "rollcall-cameras"


@dataclass(frozen=True)
class Member:
    member_id: str
    capacity: float = 1.0
    slots: frozenset[int] = frozenset()  # the slots it runs now (its last assignment)
    standby: frozenset[int] = frozenset()  # the slots it keeps a warm standby of (room cameras it shadows)


def balance(slots: Iterable[int], costs: Mapping[int, float], members: Iterable[Member]) -> dict[str, list[int]]:
    """Member id -> its slots. ``costs``: slot -> cost of its cameras (absent or 0: an empty slot)."""
    members = sorted(members, key=lambda m: m.member_id)
    if not members:
        return {}
    slots = sorted(set(slots))
    loaded = [s for s in slots if costs.get(s, 0.0) > 0]
    total = sum(costs[s] for s in loaded)
    capacity = sum(m.capacity for m in members)
    share = {m.member_id: total * m.capacity / capacity for m in members}
    load = {m.member_id: 0.0 for m in members}
    owner: dict[int, str] = {}
    for member in members:  # 1. sticky, within the fair share (a first camera is always kept)
        for slot in sorted((s for s in member.slots if s in loaded and s not in owner), key=lambda s: (-costs[s], s)):
            cost = costs[slot]
            if load[member.member_id] == 0 or load[member.member_id] + cost <= share[member.member_id] + 1e-9:
                owner[slot] = member.member_id
                load[member.member_id] += cost
    by_capacity = {m.member_id: m.capacity for m in members}
    orphaned = {s for s in loaded if not any(s in m.slots for m in members)}  # its owner left the group

    def lightest() -> str:
        return min(load, key=lambda mid: (load[mid] / by_capacity[mid], mid))

    for slot in sorted((s for s in loaded if s not in owner), key=lambda s: (-costs[s], s)):  # 2.
        # a slot whose owner is gone goes to its standby, which has the room's tracks warm (over its share
        # if need be: the next rebalance evens it out by moving cameras without state, such as doors)
        warm = [m.member_id for m in members if slot in m.standby] if slot in orphaned else []
        mid = min(warm, key=lambda w: (load[w] / by_capacity[w], w)) if warm else lightest()
        owner[slot] = mid
        load[mid] += costs[slot]
    empty = [s for s in slots if s not in owner]  # 3. round robin, least loaded member first
    order = sorted(load, key=lambda mid: (load[mid] / by_capacity[mid], mid))
    for i, slot in enumerate(empty):
        owner[slot] = order[i % len(order)]
    result: dict[str, list[int]] = {m.member_id: [] for m in members}
    for slot, mid in owner.items():
        result[mid].append(slot)
    return {mid: sorted(s) for mid, s in result.items()}


def standbys(split: Mapping[str, list[int]], costs: Mapping[int, float], wanted: Iterable[int],
             members: Iterable[Member], standby_share: float = 0.5) -> dict[str, list[int]]:
    """Member id -> the slots it keeps a standby of: each ``wanted`` slot on a member other than its owner,
    the one that had it before if it still may, else the least loaded (a standby weighs ``standby_share``
    of the slot's cost; empty slots are dealt round robin). A member runs a standby only for the room
    cameras in its standby slots, so a slot has its standby before a camera lands in it. Nothing with a
    single member."""
    members = sorted(members, key=lambda m: m.member_id)
    result: dict[str, list[int]] = {m.member_id: [] for m in members}
    if len(members) < 2:
        return result
    capacity = {m.member_id: m.capacity for m in members}
    owner = {slot: mid for mid, slots in split.items() for slot in slots}
    load = {m.member_id: sum(costs.get(s, 0.0) for s in split.get(m.member_id, [])) for m in members}
    for slot in sorted(set(wanted), key=lambda s: (-costs.get(s, 0.0), s)):
        others = [m for m in members if m.member_id != owner.get(slot)]
        before = [m.member_id for m in others if slot in m.standby]
        mid = before[0] if before else min((m.member_id for m in others),
                                           key=lambda o: (load[o] / capacity[o], len(result[o]), o))
        result[mid].append(slot)
        load[mid] += standby_share * costs.get(slot, 0.0)
    return {mid: sorted(s) for mid, s in result.items()}


def encode_metadata(slots: Iterable[int], capacity: float, name: str, standby: Iterable[int] = ()) -> bytes:
    return json.dumps({"slots": sorted(slots), "capacity": capacity, "name": name,
                       "standby": sorted(standby)}).encode()


def decode_metadata(member_id: str, data: bytes | None) -> Member:
    """What a member reported; anything unreadable counts as a new member of capacity 1."""
    try:
        raw = json.loads(data or b"{}")
        slots = frozenset(int(s) for s in raw.get("slots", []))
        standby = frozenset(int(s) for s in raw.get("standby", []))
        capacity = float(raw.get("capacity", 1.0))
        if not capacity > 0:
            raise ValueError("capacity must be positive")
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("group member %s sent unreadable metadata (%s): taken as a new member", member_id, exc)
        return Member(member_id)
    return Member(member_id, capacity, slots, standby)


def make_assignor(topic: str, *, name: str, capacity: float, costs: Callable[[], Mapping[int, float]],
                  on_assigned: Callable[[list[int]], None] | None = None,
                  wants_standby: Callable[[], Iterable[int]] = tuple) -> type[AbstractPartitionAssignor]:
    """An aiokafka assignor class bound to this member: its metadata carries the slots it runs, those it
    keeps a standby of, and its capacity; when it leads the group, ``costs()`` (slot -> cost, from its view
    of the cameras) weighs the split and ``wants_standby()`` (the slots of room cameras) get a standby each,
    sent to their member in the assignment's user data. aiokafka calls assignors as classes, so each member
    gets a class of its own; its ``state`` holds the last assignment (``slots``, ``standby``)."""
    state = {"slots": [], "standby": []}

    class CameraAssignor(AbstractPartitionAssignor):
        version = 0

        @classmethod
        def assign(cls, cluster, members):
            partitions = cluster.partitions_for_topic(topic) or set()
            reported = [decode_metadata(mid, meta.user_data) for mid, meta in members.items()]
            weights = costs()
            split = balance(partitions, weights, reported)
            spare = standbys(split, weights, [s for s in wants_standby() if s in partitions], reported)
            log.info("group %s: leader %s assigns %d slot(s) over %d member(s)", topic, name, len(partitions),
                     len(members))
            return {mid: ConsumerProtocolMemberAssignment(cls.version, [(topic, split.get(mid, []))],
                                                          json.dumps({"standby": spare.get(mid, [])}).encode())
                    for mid in members}

        @classmethod
        def metadata(cls, topics):
            return ConsumerProtocolMemberMetadata(cls.version, list(topics),
                                                  encode_metadata(state["slots"], capacity, name, state["standby"]))

        @classmethod
        def on_assignment(cls, assignment):
            state["slots"] = sorted(p for t, ps in assignment.assignment if t == topic for p in ps)
            try:
                state["standby"] = sorted(int(s) for s in json.loads(assignment.user_data or b"{}").get("standby", []))
            except (ValueError, TypeError, AttributeError):
                state["standby"] = []  # a leader of another version: no standby here
            if on_assigned is not None:
                on_assigned(state["slots"])

    CameraAssignor.name = PROTOCOL
    CameraAssignor.state = state
    return CameraAssignor
