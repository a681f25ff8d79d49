"""The campus configuration: one TOML file, environment overrides, validated on load.

A deployment describes its cameras (door or room role), rooms, doors (which door camera feeds which
room camera, the entry-zone polygon on the room camera, the transit window), courses with rosters and
policies, the timetable, thresholds, the model pack and the Kafka topics. Every address is
configuration: ``"embedded"`` (the default) means "the embedded stack of `rollcall up`", and the
environment variables below point the same code at a campus's real services:

- ``DATABASE_URL``                  → ``[database] url``
- ``KAFKA_BOOTSTRAP_SERVERS``       → ``[kafka] bootstrap_servers``
- ``ROLLCALL_MODEL_PACK``           → ``[models] pack``
- ``ROLLCALL_CAMERA_<ID>_URL``      → the url of camera ``<ID>`` (upper case, ``-`` and ``.`` as ``_``)
- ``ROLLCALL__<SECTION>__<KEY>``    → any scalar key, e.g. ``ROLLCALL__THRESHOLDS__MIN_FACE_PX=48``

Errors name the file, the key and what is wrong, in one line (``RollcallError``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.foundation.config_model import (  # noqa: F401  (the model, re-exported: import it from here)
    AttendancePolicy,
    AttendanceWriterConfig,
    CameraConfig,
    Config,
    CourseConfig,
    DashboardConfig,
    DatabaseConfig,
    DoorConfig,
    EMBEDDED,
    EXAMPLE_CONFIG,
    KafkaConfig,
    LivenessConfig,
    ModelsConfig,
    PrivacyConfig,
    ReportsConfig,
    RoomConfig,
    SchedulingConfig,
    SiteConfig,
    Slug,
    SmtpConfig,
    StackConfig,
    ThresholdsConfig,
    TimetableEntry,
    TopicConfig,
    TopicsConfig,
    TrackingConfig,
    TransitWindow,
    WEEKDAYS,
    Weekday,
)
from infra.foundation.errors import RollcallError



def default_config_path() -> Path:
    """``ROLLCALL_CONFIG``, else ``./rollcall.toml``, else the shipped example (what `make demo` uses)."""
    if os.environ.get("ROLLCALL_CONFIG"):
        return Path(os.environ["ROLLCALL_CONFIG"])
    local = Path.cwd() / "rollcall.toml"
    return local if local.exists() else EXAMPLE_CONFIG


def load_config(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Config:
    path = Path(path) if path is not None else default_config_path()
    environ = dict(os.environ) if environ is None else environ
    shown = _display(path)
    try:
        text = _read_config_text(path)
        # JSON too (the same keys): what tools generate, e.g. the scenario runner's config for its processors
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        if not isinstance(raw, dict):
            raise json.JSONDecodeError("the top level must be an object", text, 0)
    except FileNotFoundError:
        raise RollcallError(f"{shown}: config file not found: pass --config PATH or set ROLLCALL_CONFIG") from None
    except IsADirectoryError:
        raise RollcallError(f"{shown}: is a folder, not a config file: pass the .toml file itself") from None
    except PermissionError:
        raise RollcallError(f"{shown}: permission denied: make the config readable by this user "
                            "(or pass another with --config)") from None
    except OSError as exc:
        raise RollcallError(f"{shown}: cannot read the config ({exc.strerror or type(exc).__name__}): "
                            "pass a readable TOML file with --config") from None
    except UnicodeDecodeError as exc:
        raise RollcallError(f"{shown}: not a text file (invalid UTF-8 at byte {exc.start}): "
                            "the config must be UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise RollcallError(f"{shown}: not valid TOML: {' '.join(str(exc).split())}") from None
    except json.JSONDecodeError as exc:
        raise RollcallError(f"{shown}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise RollcallError(f"{shown}: not valid TOML or JSON: nested too deeply") from None
    return config_from_dict(raw, source=path, environ=environ)


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a campus config is kilobytes; more is the wrong file


def _read_config_text(path: Path) -> str:
    """The file's text: a regular file only (opening a FIFO would block, a device might never end), of sane
    size. FileNotFoundError, IsADirectoryError, PermissionError and other OSErrors pass up."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(str(path))
    if not stat.S_ISREG(mode):
        raise OSError(0, "not a regular file")
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(0, f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, not a config file")
    return data.decode("utf-8")


def config_from_dict(raw: dict[str, Any], *, source: Path | None = None,
                     environ: dict[str, str] | None = None) -> Config:
    shown = _display(source) if source else "<config>"
    origins: dict[str, str] = {}
    raw = _apply_environment(raw, environ or {}, shown, origins)
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise RollcallError(f"{shown}: {_first_error(exc, origins)}") from None
    problem = _cross_reference_problem(config)
    if problem:
        raise RollcallError(f"{shown}: {problem}")
    return config


def _apply_environment(raw: dict[str, Any], environ: dict[str, str], shown: str,
                       origins: dict[str, str]) -> dict[str, Any]:
    """Overlay the environment on the file; ``origins`` records which key came from which variable."""
    raw = copy.deepcopy(raw)  # the caller's dict stays as it was
    for variable, section, key in (("DATABASE_URL", "database", "url"),
                                   ("KAFKA_BOOTSTRAP_SERVERS", "kafka", "bootstrap_servers"),
                                   ("ROLLCALL_MODEL_PACK", "models", "pack")):
        if environ.get(variable):
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise RollcallError(f"{shown}: {section}: must be a table")
            table[key] = environ[variable]
            origins[f"{section}.{key}"] = variable
    cameras = raw.get("cameras")
    if isinstance(cameras, list):
        for index, camera in enumerate(cameras):
            if isinstance(camera, dict) and isinstance(camera.get("id"), str):
                variable = f"ROLLCALL_CAMERA_{_env_name(camera['id'])}_URL"
                if environ.get(variable):
                    camera["url"] = environ[variable]
                    origins[f"cameras[{index}].url"] = variable
    for key, value in environ.items():
        if not key.startswith("ROLLCALL__"):
            continue
        parts = [p.lower() for p in key[len("ROLLCALL__"):].split("__") if p]
        if len(parts) < 2:
            raise RollcallError(f"environment {key}: needs ROLLCALL__SECTION__KEY, e.g. ROLLCALL__THRESHOLDS__MIN_FACE_PX")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RollcallError(f"environment {key}: {'.'.join(parts[:-1])} in {shown} is not a table")
            node = child
        node[parts[-1]] = _toml_scalar(value)
        origins[".".join(parts)] = key
    return raw


def _toml_scalar(text: str) -> Any:
    # "48" -> 48, "true" -> True, "[1, 2]" -> [1, 2]; anything that is not a TOML value stays a string
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _cross_reference_problem(config: Config) -> str | None:
    for section, items in (("cameras", config.cameras), ("rooms", config.rooms),
                           ("doors", config.doors), ("courses", config.courses)):
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item.id in seen:
                return f"{section}[{index}].id: {item.id!r} is used twice: ids must be unique"
            seen.add(item.id)
    rooms = {room.id for room in config.rooms}
    cameras = {camera.id: camera for camera in config.cameras}
    courses = {course.id for course in config.courses}
    for index, camera in enumerate(config.cameras):
        if camera.room not in rooms:
            return f"cameras[{index}].room: no room {camera.room!r}: add it under [[rooms]] or fix the id"
    for index, door in enumerate(config.doors):
        if door.room not in rooms:
            return f"doors[{index}].room: no room {door.room!r}: add it under [[rooms]] or fix the id"
        for key, role in (("door_camera", "door"), ("room_camera", "room")):
            camera_id = getattr(door, key)
            camera = cameras.get(camera_id)
            if camera is None:
                return f"doors[{index}].{key}: no camera {camera_id!r}: add it under [[cameras]] or fix the id"
            if camera.role != role:
                return f"doors[{index}].{key}: camera {camera_id!r} has role {camera.role!r}, expected {role!r}"
        if cameras[door.room_camera].room != door.room:
            return f"doors[{index}].room_camera: camera {door.room_camera!r} is in room {cameras[door.room_camera].room!r}, not {door.room!r}"
    for index, entry in enumerate(config.timetable):
        if entry.course not in courses:
            return f"timetable[{index}].course: no course {entry.course!r}: add it under [[courses]] or fix the id"
        if entry.room not in rooms:
            return f"timetable[{index}].room: no room {entry.room!r}: add it under [[rooms]] or fix the id"
    return None


def _first_error(exc: ValidationError, origins: dict[str, str]) -> str:
    error = exc.errors()[0]
    where = _location(error["loc"])
    if where in origins:
        where += f" (set by environment variable {origins[where]})"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key: check its spelling against the configuration reference in README.md"
    elif error["type"] == "missing":
        message = "required key is missing"
    count = exc.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{where or '(top level)'}: {message}{more}"


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "literal[")):
            text += f".{part}" if text else part
    return text


def _env_name(camera_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", camera_id).upper()


def _display(path: Path | None) -> str:
    if path is None:
        return "<config>"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
