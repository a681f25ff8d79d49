"""Bad command-line values and unreadable config files: the real `rollcall` in a subprocess answers each with
one line on stderr, a non-zero exit and no traceback. The database and broker addresses point at closed
ports: a value that slipped through validation would reach them and fail with a different message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.foundation.paths import PROJECT_ROOT

SPEC = str(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")

# (arguments, a fragment the one line must contain)
BAD_VALUES = [
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "nan"], "finite"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "inf"], "finite"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "-inf"], "finite"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "-5"], "out of range"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "0"], "out of range"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "1e300"], "out of range"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "ten"], "not a number"),
    (["attendance", "session", "open", "--course", "CS101", "--room", "A101", "--minutes", "90",
      "--starts-at", "9999-12-31T23:00"], "out of range"),
    (["attendance", "session", "close", "99999999999999999999"], "not in the range"),
    (["attendance", "session", "close", "--", "-1"], "not in the range"),
    (["attendance", "export", "session", "0"], "not in the range"),
    (["attendance", "export", "course", "CS101", "--from", "2026-01-01", "--to", "9999-12-31"], "out of range"),
    (["attendance", "export", "student", "s1", "--from", "0001-01-01", "--to", "2026-01-01"], "out of range"),
    (["attendance", "export", "student", "s1", "--from", "2026-02-30", "--to", "2026-03-01"], "not a date"),
    (["attendance", "session", "list", "--from", "1900-01-01", "--to", "2999-01-01"], "span more than"),
    (["attendance", "writer", "--metrics-port", "70000"], "not in the range"),
    (["bench", "writer", "--events", "nan"], "not a valid integer"),
    (["bench", "writer", "--events", "1" + "0" * 30], "not in the range"),
    (["bench", "writer", "--rooms", "0"], "not in the range"),
    (["bench", "writer", "--writers", "0"], "not in the range"),
    (["bench", "faces", "--seconds", "nan"], "finite"),
    (["bench", "faces", "--streams", "0"], "not in the range"),
    (["bench", "persons", "--fps", "inf"], "finite"),
    (["bench", "persons", "--seconds", "-1"], "out of range"),
    (["bench", "tracking", SPEC, "--fps", "nan,2"], "must be numbers above 0"),
    (["bench", "tracking", SPEC, "--fps", "inf"], "must be numbers above 0"),
    (["bench", "tracking", SPEC, "--detect-budget", "-1"], "out of range"),
    (["bench", "trace", SPEC], "not a room trace"),
    (["bench", "trace", SPEC, "--window", "0", "nan"], "finite"),
    (["bench", "dashboard", "--rate", "nan"], "finite"),
    (["bench", "dashboard", "--events", "5"], "not in the range"),
    (["scenario", "run", SPEC, "--load", "nan"], "finite"),
    (["scenario", "run", SPEC, "--load", "-1"], "out of range"),
    (["run", "--max-wait-ms", "nan"], "finite"),
    (["run", "--metrics-port", "70000"], "not in the range"),
    (["run", "--max-batch", "0"], "not in the range"),
    (["dashboard", "serve", "--port", "70000"], "not in the range"),
    (["dashboard", "serve", "--port", "-1"], "not in the range"),
    (["demo", "--port", "99999"], "not in the range"),
    (["attendance", "session", "frobnicate"], "No such command"),
]


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ROLLCALL_CONFIG",) and not k.startswith("ROLLCALL__")}
    env.update(DATABASE_URL="postgresql://rollcall@127.0.0.1:1/nowhere", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
               ROLLCALL_STACK_DIR=str(tmp_path / "stack"), ROLLCALL_HOME=str(tmp_path / "home"), COLUMNS="100")
    return env


def _rollcall(args, env, cwd=PROJECT_ROOT, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "infra.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


def _assert_one_line(result, fragment: str, what) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, (what, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, (what, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("rollcall: error: "), (what, result.stderr)
    assert fragment in lines[0], (what, fragment, lines[0])


def test_bad_option_values_give_one_line(tmp_path):
    env = _env(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:  # a shared 2-core machine: two CLIs at a time
        results = list(pool.map(lambda case: _rollcall(case[0], env), BAD_VALUES))
    for (args, fragment), result in zip(BAD_VALUES, results):
        _assert_one_line(result, fragment, args)
        assert result.returncode == 2, (args, result.returncode)


def _unreadable_prefix() -> tuple[str, ...]:
    """As root, mode 000 does not stop a read: drop the capabilities that let root ignore file modes."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "root needs util-linux setpriv to test unreadable files"
    caps = "-dac_override,-dac_read_search"
    return (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}")


@pytest.fixture
def bad_configs(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "latin1.toml").write_bytes(b'[site]\nname = "Universit\xe9"\n')
    (folder / "broken.toml").write_text("[site\nname = 1\n")
    (folder / "deep.toml").write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    (folder / "big.toml").write_bytes(b"#" * (5 * 1024 * 1024))
    locked = folder / "locked.toml"
    locked.write_text("[site]\nname = 'x'\n")
    locked.chmod(0)
    os.mkfifo(folder / "fifo.toml")
    (folder / "a-folder.toml").mkdir()
    return folder


def test_unreadable_config_files_give_one_line(tmp_path, bad_configs):
    env, prefix = _env(tmp_path), _unreadable_prefix()
    cases = [  # (how the config is named, fragment)
        (["--config", str(bad_configs / "latin1.toml"), "config", "check"], "invalid UTF-8"),
        (["--config", str(bad_configs / "broken.toml"), "config", "check"], "not valid TOML"),
        (["--config", str(bad_configs / "deep.toml"), "config", "check"], "not valid TOML"),
        (["--config", str(bad_configs / "big.toml"), "config", "check"], "not a config file"),
        (["--config", str(bad_configs / "fifo.toml"), "config", "check"], "not a regular file"),
        (["--config", str(bad_configs / "a-folder.toml"), "config", "check"], "is a directory"),
        (["config", "check", str(bad_configs / "a-folder.toml")], "is a directory"),
        (["config", "check", str(bad_configs / "latin1.toml")], "invalid UTF-8"),
        (["--config", str(bad_configs / "locked.toml"), "config", "check"], "not readable"),
        (["config", "check", str(bad_configs / "locked.toml")], "not readable"),
        (["--config", str(bad_configs / "latin1.toml" / "x"), "config", "check"], "Not a directory"),
        (["scenario", "render", str(bad_configs / "locked.toml")], "not readable"),
        (["scenario", "render", str(bad_configs / "a-folder.toml")], "is a directory"),
    ]
    for args, fragment in cases:
        _assert_one_line(_rollcall(args, env, prefix=prefix), fragment, args)
    # the same files through $ROLLCALL_CONFIG, and as ./rollcall.toml (read by load_config itself, not click)
    _assert_one_line(_rollcall(["config", "check"], {**env, "ROLLCALL_CONFIG": str(bad_configs / "broken.toml")}),
                     "not valid TOML", "ROLLCALL_CONFIG")
    for name, fragment in (("locked.toml", "permission denied"), ("latin1.toml", "invalid UTF-8"),
                           ("fifo.toml", "not a regular file"), ("a-folder.toml", "is a folder")):
        cwd = tmp_path / f"cwd-{name}"
        cwd.mkdir()
        os.symlink(bad_configs / name, cwd / "rollcall.toml")
        result = _rollcall(["attendance", "session", "list"], env, cwd=cwd, prefix=prefix)
        _assert_one_line(result, fragment, name)
