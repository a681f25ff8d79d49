"""Copies of one scenario that run side by side (`rollcall bench capacity`): copy 1 is the scenario as it is;
copy k > 1 has the same timeline in a room of its own (room, door camera, room camera, door, course: the
scenario's with ``-c<k>`` added) with enrolled people of its own, drawn from ``infra/scenarios/identities.toml``.

No face is enrolled in two copies: a pool identity is used once, and never when any of its photos is one the
scenario itself shows (enrolled or visitor), so a recognition can be right in one room only. The scenario's
visitors walk into every copy (never enrolled anywhere: unknown in every room). Each copy is its own spec
file (``<state>/scenarios/capacity-specs/``, photos by absolute path), rendered and cached like any scenario.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from infra.foundation.paths import scenarios_dir
from infra.scenario.spec import ScenarioSpec, display_path, load_spec

IDENTITIES = Path(__file__).resolve().parents[1] / "scenarios" / "identities.toml"


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    enroll: tuple[Path, ...]
    door_photo: Path

    @property
    def photos(self) -> tuple[Path, ...]:
        return (*self.enroll, self.door_photo)


@dataclass(frozen=True)
class ScenarioCopy:
    index: int  # 1 = the scenario itself
    spec_path: Path
    room: str
    course: str
    door: str  # the [[doors]] id
    door_camera: str
    room_camera: str


def load_identities(path: Path = IDENTITIES) -> list[Identity]:
    """The pool of distinct people, photos resolved against the pool file."""
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8"))["people"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise RollcallError(f"{display_path(path)}: cannot read the identity pool ({exc}) — restore it from git") from None
    return [Identity(e["id"], e["name"], tuple(path.parent / p for p in e["enroll"]), path.parent / e["door_photo"])
            for e in entries]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def free_identities(spec: ScenarioSpec, pool: list[Identity]) -> list[Identity]:
    """Pool identities none of whose photos the scenario shows, whose photos are all there."""
    shown = {_digest(p) for p in spec.photos}
    free = []
    for identity in pool:
        digests = [_digest(p) for p in identity.photos]
        if None not in digests and not shown.intersection(digests):
            free.append(identity)
    return free


def copies_possible(spec: ScenarioSpec, pool: list[Identity]) -> int:
    """How many copies the pool allows: the scenario, plus one per full set of fresh enrolled people."""
    enrolled = sum(1 for a in spec.arrivals if a.enrolled)
    return 1 + len(free_identities(spec, pool)) // enrolled


def make_copies(spec_path: Path, config: Config, count: int, door) -> list[ScenarioCopy]:
    """The ``count`` copies of the scenario (specs written for copies 2..count); ``door``: the scenario's
    configured door."""
    spec = load_spec(spec_path)
    pool = load_identities()
    possible = copies_possible(spec, pool)
    if count > possible:
        copies_word = "copy" if possible == 1 else "copies"
        raise RollcallError(f"--max {count}: {display_path(spec.path)} can run at most {possible} {copies_word} at once "
                            f"(each copy needs {sum(1 for a in spec.arrivals if a.enrolled)} people of its own; "
                            f"{display_path(IDENTITIES)} has too few more) — lower --max")
    session = spec.raw.session
    copies = [ScenarioCopy(1, spec.path, session.room, session.course, door.id, door.door_camera, door.room_camera)]
    free = free_identities(spec, pool)
    enrolled = [a for a in spec.arrivals if a.enrolled]
    for k in range(2, count + 1):
        people = free[(k - 2) * len(enrolled):(k - 1) * len(enrolled)]
        suffix = f"-c{k}"
        copy = ScenarioCopy(k, Path(), session.room + suffix, session.course + suffix, door.id + suffix,
                            door.door_camera + suffix, door.room_camera + suffix)
        path = write_copy_spec(spec, copy, {a.id: person for a, person in zip(enrolled, people)})
        copies.append(replace(copy, spec_path=path))
    return copies


def write_copy_spec(spec: ScenarioSpec, copy: ScenarioCopy, people: dict[str, Identity]) -> Path:
    """The spec of one copy (same timeline; ``people``: scenario person id -> who plays them), written only
    when it changed (the render cache keys on its bytes)."""
    raw = spec.raw.model_dump(by_alias=True)
    renamed = {old: person.id for old, person in people.items()}
    raw["scenario"]["name"] = f"{spec.name[:52]}-copy{copy.index}"
    raw["session"].update(room=copy.room, course=copy.course)
    for entry in raw["people"]:
        person = people[entry["id"]]
        entry.update(id=person.id, name=person.name, enroll=[str(p) for p in person.enroll],
                     door_photo=str(person.door_photo))
    visitors = [a for a in spec.arrivals if not a.enrolled]
    for entry, arrival in zip(raw["visitors"], visitors):
        entry["door_photo"] = str(arrival.door_photo)
    for entry in raw["people"] + raw["visitors"]:
        for key in ("with", "behind"):
            if entry.get(key) is not None:
                entry[key] = renamed.get(entry[key], entry[key])
    text = f"# Copy {copy.index} of {spec.path} for `rollcall bench capacity` (generated)\n\n" + spec_toml(raw)
    path = scenarios_dir() / "capacity-specs" / f"{raw['scenario']['name']}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def spec_toml(raw: dict) -> str:
    """A scenario spec's fields (SpecFile.model_dump(by_alias=True)) as TOML; None values are left out."""
    out = []
    for table in ("scenario", "cameras.door", "cameras.room", "session"):
        section, _, sub = table.partition(".")
        out += [f"[{table}]", *_pairs(raw[section][sub] if sub else raw[section]), ""]
    for array in ("people", "visitors"):
        for entry in raw[array]:
            out += [f"[[{array}]]", *_pairs(entry), ""]
    return "\n".join(out)


def _pairs(values: dict) -> list[str]:
    return [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid in a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def copies_config(config: Config, copies: list[ScenarioCopy]) -> Config:
    """The config with each copy's room, cameras, door and course (copy 1's are the scenario's own)."""
    base = copies[0]
    door = next(d for d in config.doors if d.id == base.door)
    door_camera, room_camera = config.camera(base.door_camera), config.camera(base.room_camera)
    course = next((c for c in config.courses if c.id == base.course), None)
    if course is None:
        raise RollcallError(f"session.course {base.course!r} of the scenario is not a course of the config "
                            f"{config.source}: add it under [[courses]]")
    rooms, cameras, doors, courses = list(config.rooms), list(config.cameras), list(config.doors), list(config.courses)
    for copy in copies[1:]:
        spec = load_spec(copy.spec_path)
        rooms.append(next(r for r in config.rooms if r.id == base.room).model_copy(
            update={"id": copy.room, "name": f"{base.room} copy {copy.index}"}))
        cameras += [door_camera.model_copy(update={"id": copy.door_camera, "room": copy.room}),
                    room_camera.model_copy(update={"id": copy.room_camera, "room": copy.room})]
        doors.append(door.model_copy(update={"id": copy.door, "room": copy.room, "door_camera": copy.door_camera,
                                             "room_camera": copy.room_camera}))
        courses.append(course.model_copy(update={"id": copy.course,
                                                 "roster": [a.id for a in spec.arrivals if a.enrolled]}))
    return config.model_copy(update={"rooms": rooms, "cameras": cameras, "doors": doors, "courses": courses})
