"""The embedded stack's processes: started detached (their own session, output appended to a log) and
stopped by their recorded PID only, never by name."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from infra.devstack.ports import wait_until
from infra.foundation.embedded import alive
from infra.foundation.errors import RollcallError

STOP_TIMEOUT = 10.0


def spawn_detached(argv: list[str], log: Path) -> int:
    """Start argv in its own session, reparented away from us, output appended to log; return its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"--- {now()} rollcall starting: {shlex.join(argv)}\n")
    # sh backgrounds the command (exec'd directly, so $! is its PID) and exits: the command is
    # reparented to init, in the new session sh got, with no tie to our terminal or process group.
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    result = subprocess.run(["/bin/sh", "-c", script, "rollcall-spawn", str(log), *argv],
                            capture_output=True, text=True, start_new_session=True, timeout=30)
    try:
        return int(result.stdout.strip())
    except ValueError:
        raise RollcallError(f"could not start {argv[0]} ({result.stderr.strip()[:200]}); see {log}") from None


def terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, SIGKILL after ``timeout``; wait until the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) process handles its SIGTERM only when resumed
        except ProcessLookupError:
            return
        except PermissionError:
            raise RollcallError(f"not allowed to stop process {pid}: stop it as its owner") from None
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # only if it happens to be our child
        if wait_until(lambda: not alive(pid), wait):
            return


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def last_log_line(log: Path) -> str:
    """The log's last line that is not our own start marker (for an error message)."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines()
                     if ln.strip() and " rollcall starting: " not in ln]
    except OSError:
        return ""
    return lines[-1][:200] if lines else "no output"


def log_since(log: Path, offset: int) -> str:
    """Up to 64 KiB of the log from ``offset`` on."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""
