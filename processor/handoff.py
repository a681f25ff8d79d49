"""Door-to-room handoff: give a door camera's recognition to the person's track on the room camera.

Pure logic (no Kafka, no models). Times are seconds on one clock (Unix seconds of the frames).

- :meth:`HandoffMatcher.add_recognition` — a decided face track at a door: ``person_id`` (None: an
  unknown face, a visitor), the recognition ``event_id``, the door time, and optionally the body's
  :class:`processor.appearance.Appearance` and the side of the door camera's image the face was on.
  A second pending recognition of the same person at the same door replaces the first (the door
  camera split one person into two face tracks).
- :meth:`HandoffMatcher.add_entry` — a new room track that appeared in a door's entry zone (track id,
  time, entry position, side of the entry zone); :meth:`set_entry_appearance` gives (or refines) its
  appearance while it waits for its decision.
- :meth:`HandoffMatcher.assign` — the decisions that are due at ``now``: one :class:`Assignment` per
  entry, each entry decided once.
- :meth:`HandoffMatcher.track_exited` — a room track left; its person may be handed to a new track.

THE RULE. A recognition at door time ``r`` and an entry at time ``e`` of the same door are a candidate
pair when the transit ``e - r`` is in the door's window ``[min_s, max_s]``. Per room camera, the
candidate pairs link recognitions and entries into groups; each group is decided jointly: the pairing
(recognitions and entries may stay unmatched) with the lowest total cost, in seconds:

  total = sum over pairs of   |dev| + tiebreak * dev**2             (transit: dev = e - r - typical_s)
                            + appearance_weight * D                 (clothing, Bhattacharyya 0..1)
                            + side_weight * [sides disagree]        (side of the doorway)
        + order_weight * sum over crossed pairs of min(|e1 - e2|, |r1 - r2|)         (order)
        + unmatched_cost for each recognition and each entry left unmatched

with the weights of :class:`CueWeights` (transit is the unit: 1 per second). ``typical_s`` is the door's
configured typical transit (the window's middle unless given) until ``min_transit_samples`` confident
handoffs (unambiguous, margin at least twice ``ambiguity_s`` or no rival at all) have been seen at the
door, then the median of the last 30 of their transits: a typical transit that is off by a second or
more biases a dense stream of arrivals towards pairing each entry with a later recognition. ``D`` is
:func:`processor.appearance.distance` between the door's torso and the room track's body; where it
cannot be computed (either side has no descriptor: a v1.0 recognition event, a track never seen
apart from others) it is ``neutral_distance`` for that pair, which favours no pairing, so the other
cues decide as before. Two pairs are crossed when the first through the door came second into the
room; the order term counts only as far as both cameras saw the two apart (``min``). The side term
is used only once the door's side relation is known (``Door.sides``: "same" or "mirrored", else
learnt from the door's unambiguous handoffs: at least ``min_side_votes`` of them, 80 % agreeing), and
only for pairs whose both sides are known. ``unmatched_cost`` is the window's width plus the appearance
and side weights, so any candidate pair beats leaving both unmatched; a pair whose clothes share almost
nothing (``D >= veto_distance``) is no candidate at all. The search: the Hungarian
assignment (``scipy.optimize.linear_sum_assignment``) of the pair costs, then exchanges that lower the
total (the order term is not a pair cost) until none does.

Ambiguity (abstain only on a real tie). Every exchange of the chosen pairing that would change some
track's identity is tried: two entries swapping their recognitions (or one swapping with an unmatched
entry, e.g. a tailgater), or an entry taking an unmatched recognition instead; and, for each entry, the
best pairing (Hungarian, pair costs) in which it does not keep what it has, which finds what no single
exchange shows: a stream of arrivals shifted by one. A pairing's margin is the increase of the total. A margin below ``ambiguity_s`` means that second-best pairing is as plausible:
every track whose identity it would change stays unknown, with ``ambiguous=True``. Swapping two
unknown recognitions changes nobody's identity and is not ambiguous; an unknown (visitor) recognition
still takes its track, so that a visitor's track cannot take someone else's identity.

Asked again. An abstention is often for want of a cue, not a real tie: at a class start a track may be
seen only inside a crowd until its window closes (its clothes mixed with its neighbours'), and alone a
few seconds later. The entries left ambiguous and the recognitions still free then form an open
question; each time one of its tracks gets a new appearance (:meth:`set_entry_appearance` goes on for
them) the question is decided again by the same rule, and an entry whose margin now reaches
``ambiguity_s`` gets its identity (``Assignment.late``). The rest stay unknown; a question ends when its
tracks are gone, identified otherwise (a room face), or ``reopen_s`` after its decision.

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
from collections import deque
from typing import Collection, Iterable, Sequence

import numpy as np

from processor.appearance import Appearance, distance
from processor.handoff_group import Group, candidate_groups

_INFEASIBLE = 1e9
SIDES = ("left", "right")


@dataclasses.dataclass(frozen=True)
class CueWeights:
    """Weights of the handoff's cost, in seconds of transit deviation (see the module docstring).

    appearance 2.5: a swap of two people whose clothes differ by a typical 0.3 (same person ~0.1-0.35,
    two people ~0.3-0.9 on real pedestrians) costs 2 x 0.3 x 2.5 = 1.5 s, more than people side by side
    0.3 s apart differ in transit and order; yet even the most different clothes (a swap costs at most
    2 x 2.5 = 5 s) do not outweigh two people who passed the door and entered the room in order 2 s
    apart (4 s of deviation plus 2 s of order). order 1.0: one second of order evidence is worth one
    second of transit deviation. side 0.6: a person may change sides between the two cameras, so a
    side mismatch (2 x 0.6 for a swap) decides only a near tie of the other cues.
    neutral_distance 0.45: between the typical same-person and different-person distances, for a pair
    that cannot be compared (the same for every such pair, so it favours no pairing).
    veto_distance 0.8: clothes that share almost nothing (Bhattacharyya overlap under 0.36) are not the
    same person: such a pair is no candidate, so a recognition whose person never came in (turned back
    at the door) is not handed to someone else who walked in unrecognised, nor a stream of arrivals
    shifted by one around a face the door missed. Replayed on class-rush with the door missing 30 % of
    passages: 1.5 wrong identities a run at 0.9, 0.25 at 0.8. The same person measured at most 0.42 on
    real pedestrians; on the renderer up to 0.88 (its darkest figures come out at 0.4x the door's
    brightness), which 0.8 turns into one unknown track in class-rush."""

    appearance: float = 2.5
    order: float = 1.0
    side: float = 0.6
    neutral_distance: float = 0.45
    veto_distance: float = 0.8


@dataclasses.dataclass(frozen=True)
class Door:
    door_id: str
    door_camera: str
    room_camera: str
    transit_min_s: float
    transit_max_s: float
    typical_s: float
    sides: str | None = None  # "same" | "mirrored": door-image side vs room entry side; None: learnt

    @property
    def width_s(self) -> float:
        return self.transit_max_s - self.transit_min_s


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The decision for one room track. ``person_id`` None: unknown. ``recognition_event_id`` and
    ``transit_s`` are set when a recognition (known or unknown) was handed to the track.
    ``reason``: ``handoff`` (a known person), ``unknown_recognition`` (a visitor recognised as unknown),
    ``already_present`` (the person is on another live track), ``ambiguous``, ``no_recognition``.
    ``appearance_distance``: door vs room descriptor of the chosen pair (None: not comparable);
    ``margin``: the smallest cost increase of an exchange that would change this track's identity
    (None: no such exchange)."""

    track_id: str
    person_id: str | None
    recognition_event_id: str | None
    door_id: str
    transit_s: float | None
    ambiguous: bool
    room_camera: str = ""
    entry_time: float = 0.0
    reason: str = "handoff"
    appearance_distance: float | None = None
    margin: float | None = None
    late: bool = False  # an entry left ambiguous, decided later on a better view of its track


@dataclasses.dataclass
class _Recognition:
    door: Door
    person_id: str | None
    event_id: str
    time: float
    appearance: Appearance | None = None
    side: str | None = None


@dataclasses.dataclass
class _Entry:
    door: Door
    track_id: str
    time: float
    position: tuple[float, float] | None
    exited: bool = False
    appearance: Appearance | None = None
    side: str | None = None
    version: int = 0  # appearances given so far
    reopen: bool = True  # left ambiguous, it may be asked again (not when its time is only an estimate)


@dataclasses.dataclass
class _Question:
    """Entries left ambiguous and the recognitions still free when they were decided."""

    recs: list[_Recognition]
    ents: list[_Entry]
    until: float  # camera clock: given up after this
    asked: tuple  # (track, appearance version) of its entries when last asked


class HandoffMatcher:
    """Pending door recognitions and room entries per room camera, matched jointly (see the module)."""

    def __init__(self, doors: Iterable[Sequence], ambiguity_s: float = 1.0, settle_s: float = 0.5,
                 recognition_delay_s: float = 2.0, tiebreak: float = 1e-3, weights: CueWeights | None = None,
                 min_side_votes: int = 4, min_transit_samples: int = 3, reopen_s: float = 30.0):
        """``doors``: ``(door_id, door_camera, room_camera, transit_min_s, transit_max_s[, typical_s])``
        (typical transit: the window's middle unless given), :class:`Door` objects, or objects with those
        attributes (``infra.foundation.config.DoorConfig`` works too: ``id``, ``door_camera``, ``room_camera``,
        ``transit``, optionally ``sides``)."""
        self.ambiguity_s = float(ambiguity_s)
        self.settle_s = float(settle_s)
        self.recognition_delay_s = float(recognition_delay_s)
        self.tiebreak = float(tiebreak)
        self.weights = weights or CueWeights()
        self.min_side_votes = int(min_side_votes)
        self.min_transit_samples = int(min_transit_samples)
        self.reopen_s = float(reopen_s)
        self.doors: dict[str, Door] = {}
        self._typical: dict[str, float] = {}
        self.set_doors(doors)
        self._recognitions: dict[str, list[_Recognition]] = {}  # room camera -> pending
        self._entries: dict[str, list[_Entry]] = {}  # room camera -> pending
        self._questions: dict[str, list[_Question]] = {}  # room camera -> entries left ambiguous
        self._live: dict[str, dict[str, str | None]] = {}  # room camera -> {track_id: person_id}
        self._side_votes: dict[str, dict[str, int]] = {}  # door id -> {"same": n, "mirrored": n}
        self._transits: dict[str, deque] = {}  # door id -> transits of confident handoffs
        self.expired_recognitions = 0
        self.takeover_keep_s = 60.0
        self._held: dict[str, float] = {}  # room camera -> nothing decided before this (a takeover)

    def set_doors(self, doors: Iterable[Sequence]) -> None:
        """The doors (at start, and when the campus's doors change): what is pending stays pending."""
        parsed: dict[str, Door] = {}
        for spec in doors:
            door = _door(spec)
            if door.door_id in parsed:
                raise ValueError(f"door {door.door_id!r} given twice")
            if not 0 <= door.transit_min_s < door.transit_max_s:
                raise ValueError(f"door {door.door_id!r}: need 0 <= transit_min_s < transit_max_s")
            if door.sides not in (None, "same", "mirrored"):
                raise ValueError(f"door {door.door_id!r}: sides is 'same', 'mirrored' or None")
            parsed[door.door_id] = door
        self._typical = {d.door_id: self._typical.get(d.door_id, d.typical_s) for d in parsed.values()}
        self.doors = parsed

    # ------------------------------------------------------------------------------------ input
    def _door(self, door: str) -> Door:
        if door in self.doors:
            return self.doors[door]
        by_camera = [d for d in self.doors.values() if d.door_camera == door]
        if len(by_camera) == 1:
            return by_camera[0]
        raise KeyError(f"unknown door {door!r}: known are {', '.join(sorted(self.doors))}")

    def add_recognition(self, door: str, person_id: str | None, recognition_event_id: str, time: float, *,
                        appearance: Appearance | None = None, side: str | None = None) -> None:
        """A recognition at ``door`` (door id, or the door camera id) at door time ``time``; optionally the
        body's appearance and the side ("left"/"right") of the door camera's image the face was on."""
        d = self._door(door)
        side = _side(side)
        pending = self._recognitions.setdefault(d.room_camera, [])
        if person_id is not None:
            for old in pending:
                if old.door is d and old.person_id == person_id:
                    if time >= old.time:
                        old.event_id, old.time = recognition_event_id, float(time)
                        old.appearance = appearance or old.appearance
                        old.side = side or old.side
                    return
        pending.append(_Recognition(d, person_id, recognition_event_id, float(time), appearance, side))

    def add_entry(self, door: str, track_id: str, time: float, position: tuple[float, float] | None = None, *,
                  appearance: Appearance | None = None, side: str | None = None, reopen: bool = True) -> None:
        """A new room track ``track_id`` that appeared in ``door``'s entry zone at ``time``, on ``side``
        ("left"/"right") of the zone. ``reopen`` False: decided once; left ambiguous it stays unknown (an
        entry whose time is only estimated must not be settled later by others leaving)."""
        d = self._door(door)
        entries = self._entries.setdefault(d.room_camera, [])
        if any(e.track_id == track_id for e in entries) or track_id in self._live.get(d.room_camera, {}):
            raise ValueError(f"track {track_id!r} on {d.room_camera!r} entered twice")
        entries.append(_Entry(d, track_id, float(time), position, appearance=appearance, side=_side(side),
                              reopen=reopen))

    def set_entry_appearance(self, room_camera: str, track_id: str, appearance: Appearance | None) -> bool:
        """Give a pending entry its (better) appearance; False when the entry is no longer pending."""
        for entry in self._open_entries(room_camera):
            if entry.track_id == track_id:
                entry.appearance = appearance
                entry.version += 1
                return True
        return False

    def _open_entries(self, room_camera: str) -> Iterable[_Entry]:
        """Entries waiting for their decision, then entries left ambiguous whose question is open."""
        yield from self._entries.get(room_camera, [])
        for question in self._questions.get(room_camera, []):
            yield from question.ents

    def track_exited(self, track_id: str, room_camera: str | None = None) -> None:
        """The room track left (or was lost): its person may be handed to another track again."""
        cameras = [room_camera] if room_camera is not None else list(self._live) + list(self._entries)
        for camera in cameras:
            self._live.get(camera, {}).pop(track_id, None)
            for entry in self._open_entries(camera):
                if entry.track_id == track_id:
                    entry.exited = True  # still decided (its recognition must not go elsewhere)

    def hold(self, room_camera: str, until: float) -> None:
        """Decide nothing for the camera before ``until`` (camera clock): it was just taken over from another
        processor, and the entries of the people who came in while it was dark are still being gathered."""
        self._held[room_camera] = float(until)

    def add_live(self, room_camera: str, track_id: str, person_id: str | None) -> None:
        """A live track decided elsewhere (resumed from another processor's checkpoint): its person is in
        the room, so a later recognition of the same person is not handed to a second track."""
        self._live.setdefault(room_camera, {})[track_id] = person_id

    def rename_track(self, room_camera: str, old: str, new: str) -> None:
        """A track continues under another id (a standby taking a camera over adopts the owner's ids)."""
        live = self._live.get(room_camera, {})
        if old in live:
            live[new] = live.pop(old)
        for entry in self._open_entries(room_camera):
            if entry.track_id == old:
                entry.track_id = new

    def set_identity(self, room_camera: str, track_id: str, person_id: str | None) -> None:
        """A decided live track's identity changed (the room camera saw its face): keep one identity on
        one live track for the handoffs still to come."""
        live = self._live.setdefault(room_camera, {})
        if track_id in live:
            live[track_id] = person_id

    def is_pending(self, track_id: str) -> bool:
        """Whether an entry of this track still waits for its handoff decision (or is left ambiguous, its
        question open: a better view of it may still decide it)."""
        return any(e.track_id == track_id for camera in set(self._entries) | set(self._questions)
                   for e in self._open_entries(camera))

    def live_tracks(self, room_camera: str) -> dict[str, str | None]:
        """``{track_id: person_id}`` of the decided, live tracks of a room camera."""
        return dict(self._live.get(room_camera, {}))

    def side_relation(self, door: str) -> str | None:
        """"same" / "mirrored" when the door's side relation is configured or learnt, else None."""
        d = self._door(door)
        if d.sides is not None:
            return d.sides
        votes = self._side_votes.get(d.door_id, {})
        same, mirrored = votes.get("same", 0), votes.get("mirrored", 0)
        if same + mirrored < self.min_side_votes:
            return None
        if same >= 0.8 * (same + mirrored):
            return "same"
        if mirrored >= 0.8 * (same + mirrored):
            return "mirrored"
        return None

    def typical_transit(self, door: str) -> float:
        """The typical transit used now: configured, or learnt from confident handoffs (see the module)."""
        return self._typical[self._door(door).door_id]

    # ---------------------------------------------------------------------------------- decide
    def _pair_ok(self, r: _Recognition, e: _Entry) -> bool:
        return r.door is e.door and r.door.transit_min_s <= e.time - r.time <= r.door.transit_max_s

    def _deviation(self, r: _Recognition, e: _Entry) -> float:
        return abs(e.time - r.time - self._typical[r.door.door_id])

    def _pair_cost(self, r: _Recognition, e: _Entry, relation: str | None) -> float | None:
        """The pair's cost; None when it is no candidate (clothes that share almost nothing)."""
        d = self._deviation(r, e)
        app = distance(r.appearance, e.appearance)
        if app is not None and app >= self.weights.veto_distance:
            return None
        cost = d + self.tiebreak * d * d
        cost += self.weights.appearance * (self.weights.neutral_distance if app is None else app)
        if relation is not None and r.side is not None and e.side is not None:
            expected = r.side if relation == "same" else _flip(r.side)
            cost += self.weights.side * (expected != e.side)
        return cost

    def _unmatched_cost(self, door: Door) -> float:
        return door.width_s + self.weights.appearance + self.weights.side

    def _closes_at(self, recs: list[_Recognition], ents: list[_Entry]) -> float:
        times = [r.time + r.door.transit_max_s + self.settle_s for r in recs]
        times += [e.time + max(self.settle_s, self.recognition_delay_s - e.door.transit_min_s) for e in ents]
        return max(times)

    def assign(self, now: float, cameras: Collection[str] | None = None) -> list[Assignment]:
        """Decide every group whose window has closed at ``now``, and ask the open questions again
        whose tracks have been seen better since; one Assignment per decided entry, in entry-time order.
        ``cameras``: the room cameras run here (None: all). The recognitions for another room camera are
        kept, not expired, for ``takeover_keep_s`` beyond their transit window: this processor may take the
        camera over, and the people who came in meanwhile still need them (see :meth:`hold`)."""
        out: list[Assignment] = []
        for camera in sorted(set(self._recognitions) | set(self._entries)):
            recs = self._recognitions.get(camera, [])
            ents = self._entries.get(camera, [])
            if cameras is not None and camera not in cameras:
                recs[:] = [r for r in recs if now - r.time <= r.door.transit_max_s + self.takeover_keep_s]
                continue
            if now < self._held.get(camera, float("-inf")):
                continue
            for group_recs, group_ents in candidate_groups(recs, ents, self._pair_ok):
                if now < self._closes_at(group_recs, group_ents):
                    continue
                if group_ents:
                    out.extend(self._decide(camera, group_recs, group_ents, now))
                else:
                    self.expired_recognitions += len(group_recs)
                done_r, done_e = set(map(id, group_recs)), set(map(id, group_ents))
                recs[:] = [r for r in recs if id(r) not in done_r]
                ents[:] = [e for e in ents if id(e) not in done_e]
        out.extend(self._ask_again(now))
        out.sort(key=lambda a: (a.entry_time, a.track_id))
        return out

    def _judge(self, camera: str, recs: list[_Recognition], ents: list[_Entry]):
        """The best pairing of a group, what each recognition gives (None: an unknown face, or a person
        already on a live track: ``blocked``), and each entry's margin."""
        relation = {d: self.side_relation(d) for d in {e.door.door_id for e in ents}}
        group = Group(recs, ents, self.weights.order,
                      lambda r, e: self._pair_cost(r, e, relation[e.door.door_id]) if self._pair_ok(r, e) else None,
                      self._unmatched_cost)
        match = group.best()  # entry index -> recognition index
        live_before = {p for p in self._live.setdefault(camera, {}).values() if p is not None}
        on_live = set(live_before)
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

        return match, given, blocked, group.identity_margins(match, identity)

    def _handed(self, camera: str, r: _Recognition, e: _Entry, person: str | None, blocked: bool,
                margin: float | None, late: bool = False) -> Assignment:
        reason = "already_present" if blocked else "unknown_recognition" if r.person_id is None else "handoff"
        if not e.exited:
            self._live.setdefault(camera, {})[e.track_id] = person
        return Assignment(track_id=e.track_id, person_id=person, recognition_event_id=r.event_id,
                          door_id=e.door.door_id, transit_s=e.time - r.time, ambiguous=False, room_camera=camera,
                          entry_time=e.time, reason=reason, appearance_distance=distance(r.appearance, e.appearance),
                          margin=margin, late=late)

    def _decide(self, camera: str, recs: list[_Recognition], ents: list[_Entry], now: float) -> list[Assignment]:
        match, given, blocked, margins = self._judge(camera, recs, ents)
        live = self._live.setdefault(camera, {})
        out, unsure = [], []
        for j, e in enumerate(ents):
            i = match.get(j)
            if margins.get(j, np.inf) < self.ambiguity_s or i is None:
                ambiguous = margins.get(j, np.inf) < self.ambiguity_s
                out.append(Assignment(track_id=e.track_id, person_id=None, recognition_event_id=None,
                                      door_id=e.door.door_id, transit_s=None, ambiguous=ambiguous, room_camera=camera,
                                      entry_time=e.time, reason="ambiguous" if ambiguous else "no_recognition",
                                      margin=margins.get(j)))
                if not e.exited:
                    live[e.track_id] = None
                if ambiguous:
                    unsure.append(j)
                continue
            out.append(self._handed(camera, recs[i], e, given[i], i in blocked, margins.get(j)))
            self._vote_sides(recs[i], e)
            if margins.get(j, np.inf) >= 2 * self.ambiguity_s:
                self._learn_transit(e.door, e.time - recs[i].time)
        unsure = [j for j in unsure if ents[j].reopen]
        if unsure and self.reopen_s > 0:
            taken = {match[j] for j in match if j not in unsure}
            self._questions.setdefault(camera, []).append(_Question(
                [r for i, r in enumerate(recs) if i not in taken], [ents[j] for j in unsure], now + self.reopen_s,
                _versions(ents[j] for j in unsure)))
        return out

    def _ask_again(self, now: float) -> list[Assignment]:
        """Open questions (entries left ambiguous) asked again once one of their tracks has a new appearance:
        at a class start a track is often seen only in a crowd while its handoff waits, and alone a few
        seconds later, when the clothing cue its decision lacked is there. The same rule and margin decide;
        an entry still torn stays unknown. A question is dropped ``reopen_s`` after its decision."""
        out = []
        for camera, questions in self._questions.items():
            for q in list(questions):
                live = self._live.get(camera, {})  # a track the room camera identified meanwhile is answered
                q.ents = [e for e in q.ents if not e.exited and live.get(e.track_id) is None]
                if not q.ents or not q.recs or now > q.until:
                    questions.remove(q)
                    continue
                version = _versions(q.ents)
                if version == q.asked:
                    continue
                q.asked = version
                match, given, blocked, margins = self._judge(camera, q.recs, q.ents)
                decided = [j for j, i in match.items() if margins.get(j, np.inf) >= self.ambiguity_s]
                for j in decided:
                    out.append(self._handed(camera, q.recs[match[j]], q.ents[j], given[match[j]],
                                            match[j] in blocked, margins.get(j), late=True))
                done_r = {id(q.recs[match[j]]) for j in decided}
                q.recs = [r for r in q.recs if id(r) not in done_r]
                q.ents = [e for j, e in enumerate(q.ents) if j not in decided]
        return out

    def _learn_transit(self, door: Door, transit: float) -> None:
        samples = self._transits.setdefault(door.door_id, deque(maxlen=30))
        samples.append(transit)
        if len(samples) >= self.min_transit_samples:
            self._typical[door.door_id] = float(np.median(samples))

    def _vote_sides(self, r: _Recognition, e: _Entry) -> None:
        """An unambiguous handoff teaches the door's side relation (door image side vs room entry side)."""
        if r.side is None or e.side is None:
            return
        votes = self._side_votes.setdefault(e.door.door_id, {"same": 0, "mirrored": 0})
        votes["same" if r.side == e.side else "mirrored"] += 1


def _versions(ents: Iterable[_Entry]) -> tuple:
    """What a question's entries were when asked (a sum of versions could repeat as entries leave)."""
    return tuple((e.track_id, e.version) for e in ents)


def _side(side: str | None) -> str | None:
    if side is not None and side not in SIDES:
        raise ValueError(f"side is 'left', 'right' or None, got {side!r}")
    return side


def _flip(side: str) -> str:
    return "right" if side == "left" else "left"


def _door(spec) -> Door:
    if isinstance(spec, Door):
        return spec
    if hasattr(spec, "transit") and hasattr(spec, "id"):  # infra.foundation.config.DoorConfig
        lo, hi = float(spec.transit.min_s), float(spec.transit.max_s)
        return Door(spec.id, spec.door_camera, spec.room_camera, lo, hi, (lo + hi) / 2,
                    getattr(spec, "sides", None))
    if len(spec) not in (5, 6):
        raise ValueError(f"a door is (door_id, door_camera, room_camera, transit_min_s, transit_max_s"
                         f"[, typical_s]), got {spec!r}")
    door_id, door_camera, room_camera, lo, hi = spec[:5]
    lo, hi = float(lo), float(hi)
    typical = float(spec[5]) if len(spec) == 6 else (lo + hi) / 2
    return Door(door_id, door_camera, room_camera, lo, hi, typical)


__all__ = ["Assignment", "CueWeights", "Door", "HandoffMatcher"]
