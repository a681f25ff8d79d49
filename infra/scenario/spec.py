"""Scenario specs: a TOML file that says who walks in when, and which photos show them.

Layout (photo paths are relative to the spec file; absolute paths work too)::

    [scenario]
    name = "default"          # letters, digits, '.', '_', '-' (it names the output folder)
    duration_s = 75           # video length
    fps = 10
    seed = 7                  # optional, default 0: noise, sway, figure choice
    transit_s = 4.0           # optional: seconds from passing the door to appearing in the room
    door_passage_s = 3.5      # optional: seconds a face takes to approach the door camera

    [cameras.door]            # optional, default 1280x720 (even numbers, 640x360 .. 1920x1080)
    width = 1280
    height = 720
    [cameras.room]
    width = 1280
    height = 720

    [[people]]                # enrolled people
    id = "macron"
    name = "Emmanuel Macron"
    enroll = ["photos/macron_2014.jpg"]   # enrolment photos (not shown in the videos)
    door_photo = "photos/macron_2025.jpg" # the face the door camera sees: must differ from enroll
    arrive_s = 4                          # when the approach to the door camera starts
    leave_s = 50                          # optional: when they get up and walk out
    with = "ardern"                       # optional: walks in side by side with that person (arrivals
                                          #   at most PAIR_MAX_GAP_S apart; they take opposite lanes)
    side = "left"                         # optional: their lane at the door camera ("left" | "right")
    behind = "obama"                      # optional: right behind that person (same lane, a tailgater)
    turns_back = true                     # optional: seen at the door, turns round, never enters the room
    absent = true                         # optional: enrolled, never comes (no arrive_s): someone to spoof

    [[visitors]]              # not enrolled; id optional (default visitor-1, visitor-2, ...); same keys
    door_photo = "photos/sunak.jpg"
    arrive_s = 20
    holds = { kind = "print", of = "macron" }  # optional: a proxy-attendance attack: at the door they hold
                              # a printed photo ("print") or a phone ("phone") showing that enrolled
                              # person's door photo in front of their face (infra/scenario/attacks.py)

    [session]
    course = "CS101"
    room = "B-204"
    start_s = 6
    end_s = 70
    min_presence_s = 10       # optional: see ground truth's expected_present rule

Timeline of one arrival (all derived from the spec, recorded in the ground truth):
``arrive_s`` face starts approaching the door camera -> ``t_pass = arrive_s + door_passage_s``
passes the door (face largest) -> ``t_appear = t_pass + transit_s`` appears in the room's doorway ->
``t_seated = t_appear + ENTRY_WALK_S`` at their place -> (``leave_s``) walks out, gone
``EXIT_WALK_S`` later. Someone who ``turns_back`` comes closest at ``t_pass`` and walks back out of the
door camera's view over ``TURN_BACK_S``; they never appear in the room.

The door camera has ``DOOR_LANES`` lanes (left, right); people in one lane arrive at least
``LANE_GAP_S`` apart, so a follower's face is never hidden behind the person in front of them.

Every problem is one :class:`RollcallError` line naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.foundation.errors import RollcallError

# Fixed walking times in the room camera (seconds), so timings are known from the spec alone.
ENTRY_WALK_S = 5.0  # doorway -> through the entry zone -> their place
EXIT_WALK_S = 5.0  # their place -> through the entry zone -> gone through the doorway
DOOR_EXIT_S = 0.5  # after t_pass the face leaves the door camera's frame
DOOR_LANES = 2  # left and right lane at the door camera
LANE_GAP_S = 1.2  # people in one lane arrive at least this far apart (the follower's face stays visible)
PAIR_MAX_GAP_S = 1.0  # a pair walking side by side arrives at most this far apart
TURN_BACK_S = 2.5  # someone who turns back walks out of the door camera's view in this time
ROOM_PLACES = 18  # at most this many people in the room at once (places they walk to)

_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ScenarioSection(_Model):
    name: str = Field(pattern=_ID_RE)
    duration_s: float = Field(gt=0, le=3600)
    fps: int = Field(ge=1, le=60)
    seed: int = 0
    transit_s: float = Field(default=4.0, ge=0, le=600)
    door_passage_s: float = Field(default=3.5, ge=1.5, le=10)


class Camera(_Model):
    width: int = Field(default=1280, ge=640, le=1920, multiple_of=2)
    height: int = Field(default=720, ge=360, le=1080, multiple_of=2)


class Cameras(_Model):
    door: Camera = Camera()
    room: Camera = Camera()


class HeldPicture(_Model):
    kind: Literal["print", "phone"]
    of: str = Field(pattern=_ID_RE)  # an enrolled person (people[].id): the picture shows their door photo


class _Walker(_Model):
    """What people and visitors share: the door photo and how they walk in, stay and leave."""

    id: Optional[str] = Field(default=None, pattern=_ID_RE)
    name: Optional[str] = None
    door_photo: str
    arrive_s: Optional[float] = None
    leave_s: Optional[float] = None
    # Stretches [start_s, end_s] while in place when the room camera cannot see the person (someone
    # stands in front of them): their room track is lost and must be picked up again.
    hidden: list[tuple[float, float]] = []
    with_: Optional[str] = Field(default=None, alias="with")  # walks in side by side with this id
    side: Optional[Literal["left", "right"]] = None  # lane at the door camera
    behind: Optional[str] = None  # right behind this id, in their lane (tailgating)
    turns_back: bool = False  # seen at the door, never enters the room


class PersonEntry(_Walker):
    id: str = Field(pattern=_ID_RE)
    name: str = Field(min_length=1)
    arrive_s: Optional[float] = None  # required unless absent
    enroll: list[str] = Field(min_length=1)
    absent: bool = False  # enrolled, never comes


class VisitorEntry(_Walker):
    arrive_s: float
    holds: Optional[HeldPicture] = None  # holds up a picture of an enrolled person at the door (an attack)


class SessionSection(_Model):
    course: str = Field(min_length=1)
    room: str = Field(min_length=1)
    start_s: float
    end_s: float
    min_presence_s: float = Field(default=10.0, ge=0)


class SpecFile(_Model):
    scenario: ScenarioSection
    cameras: Cameras = Cameras()
    people: list[PersonEntry] = Field(min_length=1)
    visitors: list[VisitorEntry] = []
    session: SessionSection


@dataclass(frozen=True)
class Arrival:
    """One person walking in (enrolled or visitor), with its derived timeline."""

    id: str
    name: str
    enrolled: bool
    key: str  # where it sits in the spec, e.g. "people[1]" or "visitors[0]"
    door_photo: Path
    enroll: tuple[Path, ...]
    arrive_s: float
    t_pass: float
    t_appear: float
    t_seated: float
    leave_s: Optional[float]
    t_gone: Optional[float]
    door_lane: int
    hidden: tuple[tuple[float, float], ...] = ()
    partner: Optional[str] = None  # walks in side by side with this id
    behind: Optional[str] = None  # follows this id closely
    turns_back: bool = False
    room_shift: int = 0  # -1 / +1: walks on the left / right of the path in the room (pairs), 0: on it
    holds: Optional[tuple[str, str, Path]] = None  # (kind, enrolled id, their door photo): an attack at the door

    @property
    def t_door_end(self) -> float:
        """When they are out of the door camera's view."""
        return self.t_pass + (TURN_BACK_S if self.turns_back else DOOR_EXIT_S)


@dataclass(frozen=True)
class ScenarioSpec:
    path: Path
    raw: SpecFile
    arrivals: tuple[Arrival, ...]
    photos: tuple[Path, ...] = field(default_factory=tuple)  # every photo, in spec order, no repeats
    absent: tuple[Arrival, ...] = ()  # enrolled people who never come (no times: arrive_s etc. are 0)

    @property
    def name(self) -> str:
        return self.raw.scenario.name

    @property
    def fps(self) -> int:
        return self.raw.scenario.fps

    @property
    def duration_s(self) -> float:
        return self.raw.scenario.duration_s

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def load_spec(spec_path: str | os.PathLike) -> ScenarioSpec:
    """Read, validate and resolve a scenario spec; raise a one-line RollcallError on any problem."""
    path = Path(spec_path).expanduser().absolute()
    where = display_path(path)
    if not path.is_file():
        raise RollcallError(f"{where}: scenario spec not found — check the path")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise RollcallError(f"{where}: not UTF-8 text — save the spec as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise RollcallError(f"{where}: malformed TOML: {exc} — fix the syntax there") from None
    try:
        raw = SpecFile.model_validate(data)
    except ValidationError as exc:
        raise RollcallError(f"{where}: {_first_error(exc)}") from None
    return _check(path, where, raw)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    # a misspelt key shows up as an unknown key plus a missing one: report the unknown key first
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = _key(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"{key}: missing — add it (see infra/scenarios/default.toml)"
    if kind == "extra_forbidden":
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == err["loc"][:-1]]
        close = difflib.get_close_matches(str(err["loc"][-1]), missing, n=1)
        hint = f"did you mean {close[0]}?" if close else "remove it or fix the spelling"
        return f"{key}: unknown key — {hint}"
    if kind == "string_pattern_mismatch":
        return (f"{key}: {err['input']!r} is not a valid id — use letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{key}: {err['msg'].rstrip('.')}{shown} — fix the value"


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fail(where: str, key: str, what: str) -> RollcallError:
    return RollcallError(f"{where}: {key}: {what}")


def _check(path: Path, where: str, raw: SpecFile) -> ScenarioSpec:
    sc = raw.scenario
    dur = sc.duration_s
    if round(dur * sc.fps) < 1:
        raise _fail(where, "scenario.duration_s", f"{dur} s at {sc.fps} fps is not even one frame — make it longer")
    photos = _Photos(path, where)
    people_photos, visitor_photos = _check_photos(where, raw, photos)
    entries = _entries(where, raw)
    arrivals: list[dict[str, Any]] = []
    absent: list[Arrival] = []
    for n, (key, ident, name, enrolled, e) in enumerate(entries):
        paths = people_photos[n][0] if enrolled else ()
        door = people_photos[n][1] if enrolled else visitor_photos[n - len(raw.people)]
        if _is_absent(where, key, e):
            absent.append(Arrival(id=ident, name=name, enrolled=True, key=key, door_photo=door, enroll=paths,
                                  arrive_s=0, t_pass=0, t_appear=0, t_seated=0, leave_s=None, t_gone=None, door_lane=-1))
            continue
        arrivals.append(dict(id=ident, name=name, enrolled=enrolled, key=key, door_photo=door, enroll=paths,
                             **_times(where, sc, key, e), door_lane=-1,
                             partner=e.with_, behind=e.behind, turns_back=e.turns_back,
                             holds=_held(where, key, e, raw, people_photos)))
    _check_company(where, arrivals, {ident: e for _, ident, _, _, e in entries})
    _assign_lanes(where, arrivals)
    _check_room_places(where, arrivals)
    _check_session(where, raw.session, dur)
    return ScenarioSpec(path=path, raw=raw, arrivals=tuple(Arrival(**a) for a in arrivals), photos=tuple(photos.order),
                        absent=tuple(absent))


def _is_absent(where: str, key: str, e: Any) -> bool:
    """An enrolled person who never comes has no arrival time; everyone else needs one."""
    if getattr(e, "absent", False):
        if e.arrive_s is not None or e.leave_s is not None:
            raise _fail(where, f"{key}.arrive_s", "an absent person never arrives — remove arrive_s and leave_s")
        return True
    if e.arrive_s is None:
        raise _fail(where, f"{key}.arrive_s", "missing — add it (see infra/scenarios/default.toml)")
    return False


def _held(where: str, key: str, e: Any, raw: SpecFile,
          people_photos: list[tuple[tuple[Path, ...], Path]]) -> tuple[str, str, Path] | None:
    """A visitor's ``holds``: (kind, the enrolled person's id, that person's door photo)."""
    held = getattr(e, "holds", None)
    if held is None:
        return None
    for i, person in enumerate(raw.people):
        if person.id == held.of:
            return held.kind, held.of, people_photos[i][1]
    raise _fail(where, f"{key}.holds.of", f"{held.of!r} is not an enrolled person's id — use a people[].id")


class _Photos:
    """The spec's photos, each checked once (exists, is an image, large enough) and remembered with the hash
    of its bytes, to spot a door photo reused for enrolment."""

    def __init__(self, spec_path: Path, where: str):
        self.spec_path, self.where = spec_path, where
        self.digests: dict[Path, str] = {}
        self.order: list[Path] = []

    def __call__(self, key: str, value: str) -> Path:
        """The photo ``value`` (relative to the spec file) named by ``key``, checked."""
        where = self.where
        p = Path(value).expanduser()
        p = p if p.is_absolute() else self.spec_path.parent / p
        p = Path(os.path.normpath(p))
        if p not in self.digests:
            if not p.exists():
                raise _fail(where, key, f"file {value} does not exist — fix the path (relative to the spec file)"
                            " or run `rollcall models fetch open` to get the test photos")
            if not p.is_file():
                raise _fail(where, key, f"{value} is not a file — point it at a JPEG or PNG photo")
            blob = p.read_bytes()
            img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) if blob else None
            if img is None or img.size == 0:
                raise _fail(where, key, f"file {value} is not an image OpenCV can read — use a JPEG or PNG photo")
            if min(img.shape[:2]) < 48:
                raise _fail(where, key, f"photo {value} is only {img.shape[1]}x{img.shape[0]} px — use a larger photo")
            self.digests[p] = hashlib.sha256(blob).hexdigest()
            self.order.append(p)
        return p


def _check_photos(where: str, raw: SpecFile,
                  photo: _Photos) -> tuple[list[tuple[tuple[Path, ...], Path]], list[Path]]:
    """Every person's (enrolment photos, door photo) and every visitor's door photo, checked; no door photo
    may be an enrolment photo."""
    enrolled_photos: dict[str, str] = {}  # sha -> "people[i].enroll[j]"
    people_photos: list[tuple[tuple[Path, ...], Path]] = []
    for i, person in enumerate(raw.people):
        paths = tuple(photo(f"people[{i}].enroll[{j}]", v) for j, v in enumerate(person.enroll))
        for j, p in enumerate(paths):
            enrolled_photos.setdefault(photo.digests[p], f"people[{i}].enroll[{j}]")
        people_photos.append((paths, photo(f"people[{i}].door_photo", person.door_photo)))
    visitor_photos = [photo(f"visitors[{i}].door_photo", v.door_photo) for i, v in enumerate(raw.visitors)]

    # The point of the door camera is recognition from a photo the system was NOT enrolled with:
    # a door photo identical to any enrolment photo would make the test trivially easy (and for a
    # visitor, wrong), so it is rejected rather than warned about.
    digests = photo.digests
    for i, (_, door) in enumerate(people_photos):
        if digests[door] in enrolled_photos:
            raise _fail(where, f"people[{i}].door_photo", f"same photo as {enrolled_photos[digests[door]]} — "
                        "use a different photo of the person, so the door tests recognition, not a lookup")
    for i, door in enumerate(visitor_photos):
        if digests[door] in enrolled_photos:
            raise _fail(where, f"visitors[{i}].door_photo", f"same photo as {enrolled_photos[digests[door]]} — "
                        "a visitor must not be an enrolment photo; use another photo")
    return people_photos, visitor_photos


def _entries(where: str, raw: SpecFile) -> list[tuple[str, str, str, bool, Any]]:
    """(key, id, name, enrolled, entry) of every person, then every visitor (``visitor-<n>`` when it has no
    id); ids must be unique."""
    seen: dict[str, str] = {}
    entries: list[tuple[str, str, str, bool, Any]] = []
    for i, person in enumerate(raw.people):
        entries.append((f"people[{i}]", person.id, person.name, True, person))
    for i, visitor in enumerate(raw.visitors):
        vid = visitor.id or f"visitor-{i + 1}"
        entries.append((f"visitors[{i}]", vid, visitor.name or vid, False, visitor))
    for key, ident, _, _, _ in entries:
        if ident in seen:
            raise _fail(where, f"{key}.id", f"duplicate id {ident!r} (also {seen[ident]}) — ids must be unique")
        seen[ident] = key
    return entries


def _times(where: str, sc: ScenarioSection, key: str, e: Any) -> dict[str, Any]:
    """An arrival's times (at the door, in the room, in place, gone) and hidden stretches, each checked to
    fit in the scenario."""
    dur = sc.duration_s
    if not 0 <= e.arrive_s < dur:
        raise _fail(where, f"{key}.arrive_s", f"{e.arrive_s:g} s is outside the scenario [0, {dur:g}) — "
                    "make it a time inside scenario.duration_s")
    t_pass = e.arrive_s + sc.door_passage_s
    t_appear = t_pass + sc.transit_s
    t_seated = t_appear + ENTRY_WALK_S
    if e.turns_back:
        _check_turns_back(where, key, e, t_pass, dur)
    elif t_seated > dur:
        raise _fail(where, f"{key}.arrive_s", f"{e.arrive_s:g} s is too late: in place at {t_seated:g} s "
                    f"(arrive + door_passage_s + transit_s + {ENTRY_WALK_S:g} s walk), after the end "
                    f"({dur:g} s) — arrive earlier or lengthen scenario.duration_s")
    t_gone = None
    if e.leave_s is not None:
        if e.leave_s < t_seated:
            raise _fail(where, f"{key}.leave_s", f"{e.leave_s:g} s is before the person is in place "
                        f"({t_seated:g} s = arrive_s + door_passage_s + transit_s + {ENTRY_WALK_S:g} s walk)"
                        " — leave later or arrive earlier")
        t_gone = e.leave_s + EXIT_WALK_S
        if t_gone > dur:
            raise _fail(where, f"{key}.leave_s", f"{e.leave_s:g} s is too late: the walk out ends at "
                        f"{t_gone:g} s, after the end ({dur:g} s) — leave earlier or remove leave_s")
    for j, (h0, h1) in enumerate(e.hidden):
        in_place_until = e.leave_s if e.leave_s is not None else dur
        if not t_seated <= h0 < h1 <= in_place_until:
            raise _fail(where, f"{key}.hidden[{j}]", f"[{h0:g}, {h1:g}] s must be a stretch while the person "
                        f"is in place, inside [{t_seated:g}, {in_place_until:g}] s — move it there")
    return dict(arrive_s=e.arrive_s, t_pass=t_pass, t_appear=t_appear, t_seated=t_seated, leave_s=e.leave_s,
                t_gone=t_gone, hidden=tuple((float(h0), float(h1)) for h0, h1 in e.hidden))


def _check_room_places(where: str, arrivals: list[dict[str, Any]]) -> None:
    """At most ROOM_PLACES people in the room at once."""
    spans = sorted((a["t_appear"], a["t_gone"] if a["t_gone"] is not None else float("inf"), a["key"])
                   for a in arrivals if not a["turns_back"])
    for start, _, key in spans:
        inside = sum(1 for s, e, _ in spans if s <= start < e)
        if inside > ROOM_PLACES:
            raise _fail(where, f"{key}.arrive_s", f"more than {ROOM_PLACES} people in the room at {start:g} s — "
                        f"the room camera has {ROOM_PLACES} places; have fewer people or some leave earlier")


def _check_session(where: str, se: SessionSection, dur: float) -> None:
    """The session ends after it starts, inside the scenario."""
    if se.end_s <= se.start_s:
        raise _fail(where, "session.end_s", f"{se.end_s:g} s is not after session.start_s ({se.start_s:g} s) — "
                    "the session must end after it starts")
    if se.start_s < 0 or se.end_s > dur:
        key = "session.start_s" if se.start_s < 0 else "session.end_s"
        raise _fail(where, key, f"session [{se.start_s:g}, {se.end_s:g}] s is outside the scenario "
                    f"[0, {dur:g}] s — keep the session inside scenario.duration_s")


def _check_turns_back(where: str, key: str, e: Any, t_pass: float, dur: float) -> None:
    if e.leave_s is not None or e.hidden:
        bad = "leave_s" if e.leave_s is not None else "hidden"
        raise _fail(where, f"{key}.{bad}", "someone who turns_back never enters the room — remove it")
    if t_pass + TURN_BACK_S > dur:
        raise _fail(where, f"{key}.arrive_s", f"too late: turning back ends at {t_pass + TURN_BACK_S:g} s, after "
                    f"the end ({dur:g} s) — arrive earlier or lengthen scenario.duration_s")


def _check_company(where: str, arrivals: list[dict[str, Any]], entries: dict[str, Any]) -> None:
    """``with`` and ``behind`` name another arrival that is really beside / in front of this one."""
    by_id = {a["id"]: a for a in arrivals}
    for a in arrivals:
        for field_name, other_id in (("with", a["partner"]), ("behind", a["behind"])):
            if other_id is None:
                continue
            key = f"{a['key']}.{field_name}"
            other = by_id.get(other_id)
            if other is None or other_id == a["id"]:
                raise _fail(where, key, f"{other_id!r} is not another arrival's id — use the id of a person or visitor")
            gap = a["arrive_s"] - other["arrive_s"]
            if field_name == "with":
                if abs(gap) > PAIR_MAX_GAP_S:
                    raise _fail(where, key, f"{other_id!r} arrives {abs(gap):g} s apart — side by side means at most "
                                f"{PAIR_MAX_GAP_S:g} s apart; make arrive_s closer")
                if other["turns_back"] != a["turns_back"]:
                    raise _fail(where, key, f"{other_id!r} turns back and this one does not — walking together "
                                "means the same way; remove one")
                if other["partner"] not in (None, a["id"]):
                    raise _fail(where, key, f"{other_id!r} already walks with {other['partner']!r} — pairs only")
                if entries[a["id"]].side is not None and entries[a["id"]].side == entries[other_id].side:
                    raise _fail(where, f"{a['key']}.side", f"same side as {other_id!r} who walks beside — "
                                "give them different sides")
                other["partner"] = a["id"]
            elif not LANE_GAP_S <= gap <= 3.0:
                raise _fail(where, key, f"arrives {gap:g} s after {other_id!r} — right behind means "
                            f"{LANE_GAP_S:g} to 3 s after them; change arrive_s")
        side = entries[a["id"]].side
        a["side"] = None if side is None else (0 if side == "left" else 1)


def _assign_lanes(where: str, arrivals: list[dict[str, Any]]) -> None:
    """Door lanes: people arriving together use separate lanes; one lane takes a person every LANE_GAP_S."""
    by_id = {a["id"]: a for a in arrivals}
    lanes: list[list[float]] = [[] for _ in range(DOOR_LANES)]
    # at equal times, whoever must take a given lane (side, behind) chooses first
    order_in = sorted(arrivals, key=lambda a: (a["arrive_s"], a["side"] is None and a["behind"] is None, a["key"]))
    for n, a in enumerate(order_in):
        forced = a.pop("side")
        partner = by_id.get(a["partner"] or "")
        if forced is None and partner is not None and partner["door_lane"] >= 0:
            forced = 1 - partner["door_lane"]
        if forced is None and a["behind"] is not None:
            forced = by_id[a["behind"]]["door_lane"]
        order = [forced] if forced is not None else [(n + k) % DOOR_LANES for k in range(DOOR_LANES)]
        for lane in order:
            if all(abs(a["arrive_s"] - t) >= LANE_GAP_S - 1e-9 for t in lanes[lane]):
                lanes[lane].append(a["arrive_s"])
                a["door_lane"] = lane
                break
        else:
            raise _fail(where, f"{a['key']}.arrive_s", f"no free lane at the door camera at {a['arrive_s']:g} s — "
                        f"people in one lane (of {DOOR_LANES}) must arrive at least {LANE_GAP_S:g} s apart; "
                        "move this arrival")
        if partner is not None:  # a pair walks through the room side by side: left lane on the left
            a["room_shift"] = -1 if a["door_lane"] == 0 else 1
