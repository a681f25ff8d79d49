"""`rollcall demo`: the whole system on one machine, on the demo scenario.

1. the embedded stack (`rollcall up`: PostgreSQL, broker, RTSP serving the rendered scenarios; migrated,
   topology loaded);
2. the scenarios' people enrolled from their enrolment photos (as `rollcall scenario run` does);
3. demo dashboard accounts (admin, faculty, students) with fresh random passwords, printed;
4. child processes, each in its own process group: the processor (`rollcall run`), the attendance
   writer (`rollcall attendance writer`, when this installation has it) and the dashboard
   (`rollcall dashboard serve`);
5. the dashboard URL and the logins printed; Ctrl-C (or SIGTERM) stops every child by its PID (SIGTERM,
   then SIGKILL after 10 s). A child that exits on its own stops the demo, with its log's last line.

The stack stays up afterwards (`rollcall down` stops it), like after `rollcall up`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx

from infra.devstack.dashboard import DEMO_ACCOUNTS, add_accounts, free_port
from infra.devstack.stack import start_embedded_stack
from infra.foundation import db
from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT, home
from infra.scenario.runner import demo_mounts, enroll_scenario_people
from infra.scenario.spec import load_spec

STOP_TIMEOUT_S = 10.0


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_demo(config, config_path: Path | None, *, port: int | None, metrics_port: int,
             say: Callable[[str], None], show: Callable[[str], None]) -> None:
    port = config.dashboard.port if port is None else port
    port = port or free_port()
    metrics_port = metrics_port or free_port()
    accounts, passwords = _prepare_stack(config, say)
    logs = home() / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    env, plan = _children_plan(config, config_path, port=port, metrics_port=metrics_port)

    children: list[tuple[str, subprocess.Popen, Path]] = []
    stopping = {"why": None}

    def stop(signum, _frame) -> None:
        stopping["why"] = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, argv in plan:
            log = logs / f"{name.replace(' ', '-')}.log"
            with open(log, "wb") as out:
                child = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            children.append((name, child, log))
            say(f"started {name} (pid {child.pid}, log {log})")
        url = f"http://{config.dashboard.host}:{port}/"
        if not _wait_http(url + "login", children, timeout=60):
            raise RollcallError(f"the dashboard did not answer on {url}: see {logs / 'dashboard.log'}")
        show(f"\nRollcall demo running: dashboard {url}")
        for username, role, person_id in accounts:
            who = f" ({person_id})" if person_id else ""
            show(f"  {role:8s} login: {username:8s} password: {passwords[username]}{who}")
        show("Ctrl-C stops the processor, writer and dashboard; `rollcall down` stops the stack.\n")
        while stopping["why"] is None:
            _check_children(children)
            time.sleep(0.5)
        say(f"{stopping['why']}: stopping …")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(children, say)


def _prepare_stack(config, say: Callable[[str], None]) -> tuple[list[tuple], dict[str, str]]:
    """Steps 1 to 3: the embedded stack up and loaded, the scenarios' people enrolled, the demo accounts
    made; (accounts, their passwords)."""
    say("starting the embedded stack (PostgreSQL, broker, RTSP) …")
    state, _ = start_embedded_stack(config, rtsp_mounts=demo_mounts(config))
    asyncio.run(db.load_topology(state.database_url, config))
    for entry in config.stack.scenarios:
        spec = load_spec(config.resolve_path(entry))
        asyncio.run(enroll_scenario_people(spec, config, state.database_url, say))
    accounts = [a for a in DEMO_ACCOUNTS if a[2] is None or a[2] in _people(config)]
    return accounts, add_accounts(state.database_url, accounts)


def _children_plan(config, config_path: Path | None, *, port: int,
                   metrics_port: int) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """The children's environment (this config; the dashboard reads the processor's metrics) and
    (name, argv) of each: the processor, the attendance writer, the dashboard."""
    env = {**os.environ, "ROLLCALL__DASHBOARD__PROCESSOR_METRICS_URLS": f'["http://127.0.0.1:{metrics_port}/metrics"]'}
    source = config_path or config.source
    if source is not None:
        env["ROLLCALL_CONFIG"] = str(Path(source).resolve())
    rollcall = [sys.executable, "-m", "infra.cli.main"]
    plan = [("processor", rollcall + ["run", "--metrics-port", str(metrics_port)])]
    plan.append(("attendance writer", rollcall + ["attendance", "writer"]))
    plan.append(("dashboard", rollcall + ["dashboard", "serve", "--port", str(port)]))
    return env, plan


def _check_children(children) -> None:
    """A child that exited on its own stops the demo, with its log's last line."""
    for name, child, log in children:
        if child.poll() is not None:
            raise RollcallError(f"{name} exited with status {child.returncode}: {_last_line(log) or 'no output'}"
                                f" (log {log})")


def _people(config) -> set[str]:
    return {p for c in config.courses for p in (*c.roster, *c.faculty)}


def _wait_http(url: str, children, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for _, child, _ in children):
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _stop_all(children, say) -> None:
    """SIGTERM each child by its own PID (the dashboard, then the writer, then the processor), then wait;
    SIGKILL what is still running after STOP_TIMEOUT_S."""
    for _, child, _ in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, child, _ in reversed(children):
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
            say(f"stopped {name}")
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            say(f"killed {name} (did not stop within {STOP_TIMEOUT_S:.0f} s)")
