"""Door-to-room handoff: give a door camera's recognition to the person's track on the room camera.

Pure logic (no Kafka, no models). Times are seconds on one clock (Unix seconds of the frames).

- :meth:`HandoffMatcher.add_recognition` — a decided face track at a door: ``person_id`` (None: an
  unknown face, a visitor), the recognition ``event_id``, and the door time (when the person was at
  the door: the recognition's ``last_seen``). A second pending recognition of the same person at the
  same door replaces the first (the door camera split one person into two face tracks).
- :meth:`HandoffMatcher.add_entry` — a new room track that appeared in a door's entry zone (track id,
  time, entry position).
- :meth:`HandoffMatcher.assign` — the decisions that are due at ``now``: one :class:`Assignment` per
  entry, each entry decided once.
- :meth:`HandoffMatcher.track_exited` — a room track left; its person may be handed to a new track.

THE RULE. A recognition at door time ``r`` and an entry at time ``e`` of the same door are a candidate
pair when the transit ``e - r`` is in the door's window ``[min_s, max_s]``. Per room camera, the
candidate pairs link recognitions and entries into groups; each group is decided jointly with
``scipy.optimize.linear_sum_assignment`` (recognitions and entries may stay unmatched, at a cost of the
window's width each, so any candidate pair beats leaving both unmatched). The cost of a pair is its
deviation from the door's typical transit ``|e - r - typical|`` plus a small convex term
``tiebreak * (e - r - typical)**2``: convexity makes the order-preserving pairing (first through the
door, first into the room) strictly cheaper than a crossed one when the deviations alone tie.

Ambiguity. For the chosen pairing, every exchange that would change some track's identity is
checked: two entries swapping their recognitions (or one swapping with an unmatched entry, e.g. a
tailgater), or an entry taking an unmatched recognition instead. Its margin in seconds is the
increase of the summed deviation, plus, for a swap of two recognitions, the order evidence
``min(|e1 - e2|, |r1 - r2|)`` (the order says who is who only when both the door and the room saw
the two people clearly apart). A margin below ``ambiguity_s`` means the swap is as plausible: every
track whose identity it would change stays unknown, with ``ambiguous=True``. Swapping two unknown
recognitions changes nobody's identity and is not ambiguous; an unknown (visitor) recognition still
takes its track, so that a visitor's track cannot take someone else's identity.

One identity, one live track. A known person already on a live (not exited) track of the room camera
is not handed to a second one: the recognition still takes its entry (so it steals nothing) but the
track stays unknown (``reason="already_present"``). :meth:`track_exited` frees the person.

WHEN A GROUP IS DECIDED (the window is closed): no recognition or entry that could still arrive can
join it, i.e. ``now >= `` each of
  - ``r + max_s + settle_s`` for each of its recognitions (no later entry can pair with it), and
  - ``e + max(settle_s, recognition_delay_s - min_s)`` for each of its entries (every recognition that
    could pair with it, door time up to ``e - min_s``, has been published: recognitions arrive up to
    ``recognition_delay_s`` after their door time).
So a track gets its identity at most ``max_s + settle_s`` after the person was at the door. An entry
with no candidate recognition becomes unknown (``reason="no_recognition"``: a visitor or tailgater)
once its own window has closed; a recognition whose window closes without an entry is dropped
(counted in ``expired_recognitions``).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

_INFEASIBLE = 1e9


@dataclasses.dataclass(frozen=True)
class Door:
    door_id: str
    door_camera: str
    room_camera: str
    transit_min_s: float
    transit_max_s: float
    typical_s: float

    @property
    def width_s(self) -> float:
        return self.transit_max_s - self.transit_min_s


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The decision for one room track. ``person_id`` None: unknown. ``recognition_event_id`` and
    ``transit_s`` are set when a recognition (known or unknown) was handed to the track.
    ``reason``: ``handoff`` (a known person), ``unknown_recognition`` (a visitor recognised as unknown),
    ``already_present`` (the person is on another live track), ``ambiguous``, ``no_recognition``."""

    track_id: str
    person_id: str | None
    recognition_event_id: str | None
    door_id: str
    transit_s: float | None
    ambiguous: bool
    room_camera: str = ""
    entry_time: float = 0.0
    reason: str = "handoff"


@dataclasses.dataclass
class _Recognition:
    door: Door
    person_id: str | None
    event_id: str
    time: float


@dataclasses.dataclass
class _Entry:
    door: Door
    track_id: str
    time: float
    position: tuple[float, float] | None
    exited: bool = False


class HandoffMatcher:
    """Pending door recognitions and room entries per room camera, matched jointly (see the module)."""

    def __init__(self, doors: Iterable[Sequence], ambiguity_s: float = 1.0, settle_s: float = 0.5,
                 recognition_delay_s: float = 2.0, tiebreak: float = 1e-3):
        """``doors``: ``(door_id, door_camera, room_camera, transit_min_s, transit_max_s[, typical_s])``
        (typical transit: the window's middle unless given), or objects with those attributes
        (``processor.config.DoorConfig`` works too: ``id``, ``door_camera``, ``room_camera``, ``transit``)."""
        self.ambiguity_s = float(ambiguity_s)
        self.settle_s = float(settle_s)
        self.recognition_delay_s = float(recognition_delay_s)
        self.tiebreak = float(tiebreak)
        self.doors: dict[str, Door] = {}
        for spec in doors:
            door = _door(spec)
            if door.door_id in self.doors:
                raise ValueError(f"door {door.door_id!r} given twice")
            if not 0 <= door.transit_min_s < door.transit_max_s:
                raise ValueError(f"door {door.door_id!r}: need 0 <= transit_min_s < transit_max_s")
            self.doors[door.door_id] = door
        self._recognitions: dict[str, list[_Recognition]] = {}  # room camera -> pending
        self._entries: dict[str, list[_Entry]] = {}  # room camera -> pending
        self._live: dict[str, dict[str, str | None]] = {}  # room camera -> {track_id: person_id}
        self.expired_recognitions = 0

    # ------------------------------------------------------------------------------------ input
    def _door(self, door: str) -> Door:
        if door in self.doors:
            return self.doors[door]
        by_camera = [d for d in self.doors.values() if d.door_camera == door]
        if len(by_camera) == 1:
            return by_camera[0]
        raise KeyError(f"unknown door {door!r}: known are {', '.join(sorted(self.doors))}")

    def add_recognition(self, door: str, person_id: str | None, recognition_event_id: str,
                        time: float) -> None:
        """A recognition at ``door`` (door id, or the door camera id) at door time ``time``."""
        d = self._door(door)
        pending = self._recognitions.setdefault(d.room_camera, [])
        if person_id is not None:
            for old in pending:
                if old.door is d and old.person_id == person_id:
                    if time >= old.time:
                        old.event_id, old.time = recognition_event_id, float(time)
                    return
        pending.append(_Recognition(d, person_id, recognition_event_id, float(time)))

    def add_entry(self, door: str, track_id: str, time: float,
                  position: tuple[float, float] | None = None) -> None:
        """A new room track ``track_id`` that appeared in ``door``'s entry zone at ``time``."""
        d = self._door(door)
        entries = self._entries.setdefault(d.room_camera, [])
        if any(e.track_id == track_id for e in entries) or track_id in self._live.get(d.room_camera, {}):
            raise ValueError(f"track {track_id!r} on {d.room_camera!r} entered twice")
        entries.append(_Entry(d, track_id, float(time), position))

    def track_exited(self, track_id: str, room_camera: str | None = None) -> None:
        """The room track left (or was lost): its person may be handed to another track again."""
        cameras = [room_camera] if room_camera is not None else list(self._live) + list(self._entries)
        for camera in cameras:
            self._live.get(camera, {}).pop(track_id, None)
            for entry in self._entries.get(camera, []):
                if entry.track_id == track_id:
                    entry.exited = True  # still decided (its recognition must not go elsewhere)

    def set_identity(self, room_camera: str, track_id: str, person_id: str | None) -> None:
        """A decided live track's identity changed (the room camera saw its face): keep one identity on
        one live track for the handoffs still to come."""
        live = self._live.setdefault(room_camera, {})
        if track_id in live:
            live[track_id] = person_id

    def is_pending(self, track_id: str) -> bool:
        """Whether an entry of this track still waits for its handoff decision."""
        return any(e.track_id == track_id for entries in self._entries.values() for e in entries)

    def live_tracks(self, room_camera: str) -> dict[str, str | None]:
        """``{track_id: person_id}`` of the decided, live tracks of a room camera."""
        return dict(self._live.get(room_camera, {}))

    # ---------------------------------------------------------------------------------- decide
    def _pair_ok(self, r: _Recognition, e: _Entry) -> bool:
        return r.door is e.door and r.door.transit_min_s <= e.time - r.time <= r.door.transit_max_s

    def _deviation(self, r: _Recognition, e: _Entry) -> float:
        return abs(e.time - r.time - r.door.typical_s)

    def _closes_at(self, recs: list[_Recognition], ents: list[_Entry]) -> float:
        times = [r.time + r.door.transit_max_s + self.settle_s for r in recs]
        times += [e.time + max(self.settle_s, self.recognition_delay_s - e.door.transit_min_s) for e in ents]
        return max(times)

    def assign(self, now: float) -> list[Assignment]:
        """Decide every group whose window has closed at ``now``; one Assignment per decided entry,
        in entry-time order."""
        out: list[Assignment] = []
        for camera in sorted(set(self._recognitions) | set(self._entries)):
            recs = self._recognitions.get(camera, [])
            ents = self._entries.get(camera, [])
            for group_recs, group_ents in _groups(recs, ents, self._pair_ok):
                if now < self._closes_at(group_recs, group_ents):
                    continue
                if group_ents:
                    out.extend(self._decide(camera, group_recs, group_ents))
                else:
                    self.expired_recognitions += len(group_recs)
                done_r, done_e = set(map(id, group_recs)), set(map(id, group_ents))
                recs[:] = [r for r in recs if id(r) not in done_r]
                ents[:] = [e for e in ents if id(e) not in done_e]
        out.sort(key=lambda a: (a.entry_time, a.track_id))
        return out

    def _decide(self, camera: str, recs: list[_Recognition], ents: list[_Entry]) -> list[Assignment]:
        n, m = len(recs), len(ents)
        cost = np.full((n + m, m + n), _INFEASIBLE)
        cost[n:, m:] = 0.0
        for i, r in enumerate(recs):
            cost[i, m + i] = r.door.width_s
            for j, e in enumerate(ents):
                if self._pair_ok(r, e):
                    d = self._deviation(r, e)
                    cost[i, j] = d + self.tiebreak * d * d
        for j, e in enumerate(ents):
            cost[n + j, j] = e.door.width_s
        rows, cols = linear_sum_assignment(cost)
        match: dict[int, int] = {}  # entry index -> recognition index
        for i, j in zip(rows, cols):
            if i < n and j < m:
                match[j] = i

        live = self._live.setdefault(camera, {})
        on_live = {p for p in live.values() if p is not None}
        live_before = set(on_live)
        # identity a recognition would give: None for an unknown face or a person already on a live track
        given: dict[int, str | None] = {}
        blocked: set[int] = set()
        # the same person twice in one group (two doors of one room): the cheaper pairing keeps it
        for j, i in sorted(match.items(), key=lambda ji: self._deviation(recs[ji[1]], ents[ji[0]])):
            person = recs[i].person_id
            if person is not None and person in on_live:
                blocked.add(i)
                person = None
            elif person is not None:
                on_live.add(person)
            given[i] = person

        def identity(i: int | None) -> str | None:
            if i is None:
                return None
            if i in given:
                return given[i]
            return None if recs[i].person_id in live_before else recs[i].person_id

        ambiguous = self._ambiguous(recs, ents, match, identity)
        out = []
        for j, e in enumerate(ents):
            i = match.get(j)
            base = dict(track_id=e.track_id, door_id=e.door.door_id, room_camera=camera, entry_time=e.time)
            if j in ambiguous:
                out.append(Assignment(person_id=None, recognition_event_id=None, transit_s=None,
                                      ambiguous=True, reason="ambiguous", **base))
                person = None
            elif i is None:
                out.append(Assignment(person_id=None, recognition_event_id=None, transit_s=None,
                                      ambiguous=False, reason="no_recognition", **base))
                person = None
            else:
                r = recs[i]
                person = identity(i)
                reason = ("already_present" if i in blocked else
                          "unknown_recognition" if r.person_id is None else "handoff")
                out.append(Assignment(person_id=person, recognition_event_id=r.event_id,
                                      transit_s=e.time - r.time, ambiguous=False, reason=reason, **base))
            if not e.exited:
                live[e.track_id] = person
        return out

    def _ambiguous(self, recs, ents, match: dict[int, int], identity) -> set[int]:
        """Entries whose identity a plausible exchange (margin < ambiguity_s) would change."""
        out: set[int] = set()
        unmatched_recs = set(range(len(recs))) - set(match.values())

        def dev(i: int | None, j: int) -> float | None:  # None: infeasible; unmatched entry costs nothing extra
            if i is None:
                return 0.0
            return self._deviation(recs[i], ents[j]) if self._pair_ok(recs[i], ents[j]) else None

        # two entries exchange their recognitions (one of them may have none: a tailgater)
        for j1, j2 in itertools.combinations(range(len(ents)), 2):
            i1, i2 = match.get(j1), match.get(j2)
            if i1 is None and i2 is None:
                continue
            if identity(i1) == identity(i2):
                continue
            new1, new2 = dev(i2, j1), dev(i1, j2)
            if new1 is None or new2 is None:
                continue
            margin = new1 + new2 - dev(i1, j1) - dev(i2, j2)
            if i1 is not None and i2 is not None:
                margin += min(abs(ents[j1].time - ents[j2].time), abs(recs[i1].time - recs[i2].time))
            if margin < self.ambiguity_s:
                out.update((j1, j2))
        # an entry takes a recognition that went unmatched instead of its own
        for j, i in match.items():
            for k in unmatched_recs:
                if identity(k) == identity(i) or dev(k, j) is None:
                    continue
                if dev(k, j) - dev(i, j) < self.ambiguity_s:
                    out.add(j)
        return out


def _door(spec) -> Door:
    if isinstance(spec, Door):
        return spec
    if hasattr(spec, "transit") and hasattr(spec, "id"):  # processor.config.DoorConfig
        lo, hi = float(spec.transit.min_s), float(spec.transit.max_s)
        return Door(spec.id, spec.door_camera, spec.room_camera, lo, hi, (lo + hi) / 2)
    if len(spec) not in (5, 6):
        raise ValueError(f"a door is (door_id, door_camera, room_camera, transit_min_s, transit_max_s"
                         f"[, typical_s]), got {spec!r}")
    door_id, door_camera, room_camera, lo, hi = spec[:5]
    lo, hi = float(lo), float(hi)
    typical = float(spec[5]) if len(spec) == 6 else (lo + hi) / 2
    return Door(door_id, door_camera, room_camera, lo, hi, typical)


def _groups(recs: list[_Recognition], ents: list[_Entry], pair_ok) -> list[tuple[list, list]]:
    """Connected components of the candidate pairs (lone recognitions and entries are groups too)."""
    parent = list(range(len(recs) + len(ents)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, r in enumerate(recs):
        for j, e in enumerate(ents):
            if pair_ok(r, e):
                parent[find(i)] = find(len(recs) + j)
    groups: dict[int, tuple[list, list]] = {}
    for i, r in enumerate(recs):
        groups.setdefault(find(i), ([], []))[0].append(r)
    for j, e in enumerate(ents):
        groups.setdefault(find(len(recs) + j), ([], []))[1].append(e)
    return list(groups.values())


__all__ = ["Assignment", "Door", "HandoffMatcher"]
