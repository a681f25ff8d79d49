"""Configuration: the shipped example loads, the environment overrides it, and every mistake gives
one line naming the file, the key and what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from infra.foundation.errors import RollcallError
from infra.cli.main import cli
from infra.foundation.config import EXAMPLE_CONFIG, load_config

ROLLCALL = [sys.executable, "-m", "infra.cli.main"]


def test_example_config_loads():
    config = load_config(EXAMPLE_CONFIG, environ={})
    assert {c.role for c in config.cameras} == {"door", "room"}
    door = config.doors[0]
    assert config.camera(door.door_camera).role == "door"
    assert len(door.entry_zone) >= 3 and door.transit.max_s > door.transit.min_s
    assert config.kafka.topics.presence.partitions >= 1
    assert config.database.url == "embedded" and config.kafka.bootstrap_servers == "embedded"


def test_environment_overrides_addresses():
    config = load_config(EXAMPLE_CONFIG, environ={
        "DATABASE_URL": "postgresql://att@db.campus.example:5433/rollcall",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092",
        "ROLLCALL_CAMERA_DOOR_A101_URL": "rtsp://10.1.2.3:554/stream1",
        "ROLLCALL__THRESHOLDS__MIN_FACE_PX": "64",
        "ROLLCALL_MODEL_PACK": "arcface",
    })
    assert config.database.url == "postgresql://att@db.campus.example:5433/rollcall"
    assert config.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert config.camera("door-a101").url == "rtsp://10.1.2.3:554/stream1"
    assert config.camera("room-a101").url == "embedded:default/room"
    assert config.thresholds.min_face_px == 64
    assert config.models.pack == "arcface"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campus.toml"
    path.write_text(text)
    return path


BASE = EXAMPLE_CONFIG.read_text()


@pytest.mark.parametrize("text, expected", [
    ("[site\nname = 1", ["not valid TOML", "line 1"]),
    (BASE.replace('name = "Demo campus"', 'nmae = "Demo campus"'), ["site.nmae", "unknown key"]),
    (BASE.replace('url = "embedded:default/door"', ""), ["cameras[0].url", "required key is missing"]),
    (BASE.replace('role = "door"', 'role = "entrance"'), ["cameras[0].role", "'door' or 'room'"]),
    (BASE.replace('door_camera = "door-a101"', 'door_camera = "room-a101"'),
     ["doors[0].door_camera", "has role 'room', expected 'door'"]),
    (BASE.replace('door_camera = "door-a101"', 'door_camera = "door-b202"'), ["doors[0].door_camera", "no camera 'door-b202'"]),
    (BASE.replace('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"'), ["site.timezone", "unknown time zone"]),
    (BASE.replace('weekday = "mon"', 'weekday = "mon"\ndate = 2026-12-01'), ["timetable[0]", "exactly one of weekday"]),
    (BASE.replace('start = 09:00:00\nend = 10:30:00', 'start = 11:00:00\nend = 10:30:00'), ["timetable[0]", "end must be after start"]),
    (BASE.replace('id = "room-a101"', 'id = "door-a101"'), ["cameras[1].id", "used twice"]),
    (BASE.replace("transit = { min_s = 1.0, max_s = 12.0 }", "transit = { min_s = 5.0, max_s = 2.0 }"),
     ["doors[0].transit", "max_s must be greater"]),
    (BASE.replace('url = "embedded:default/door"', 'url = "ftp://cam"'), ["cameras[0].url", "rtsp://"]),
    (BASE.replace("min_frames = 20\n", "min_frames = 10\n"), ["liveness", "clear_frames (12) must not exceed min_frames"]),
])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(RollcallError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path)) or message.startswith("campus.toml") or "campus.toml" in message
    for fragment in expected:
        assert fragment in message, message


def test_bad_environment_value_names_the_variable():
    with pytest.raises(RollcallError, match="set by environment variable DATABASE_URL"):
        load_config(EXAMPLE_CONFIG, environ={"DATABASE_URL": "mysql://db/x"})


def test_cli_reports_bad_config_in_one_line_without_traceback(tmp_path):
    path = _write(tmp_path, BASE.replace('role = "door"', 'role = 7'))
    result = subprocess.run(ROLLCALL + ["--config", str(path), "config", "check"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cameras[0].role" in lines[0], result.stderr
    missing = subprocess.run(ROLLCALL + ["--config", str(tmp_path / "nope.toml"), "config", "check"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "config file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_config_check_accepts_the_example():
    result = subprocess.run(ROLLCALL + ["config", "check", str(EXAMPLE_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "2 cameras" in result.stdout


def _all_commands(group: click.Group, prefix: list[str]):
    ctx = click.Context(group)  # the root loads its commands on demand: ask it, not its .commands
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield prefix + [name]
        if isinstance(command, click.Group):
            yield from _all_commands(command, prefix + [name])


def test_every_subcommand_has_help():
    paths = [[]] + list(_all_commands(cli, []))
    assert len(paths) > 10
    for path in paths:
        result = subprocess.run(ROLLCALL + path + ["--help"], capture_output=True, text=True,
                                env={**os.environ, "COLUMNS": "100"})
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage: rollcall" in result.stdout, (path, result.stdout)
