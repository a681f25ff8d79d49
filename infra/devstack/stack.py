"""The embedded default stack on one machine: PostgreSQL, a Kafka-compatible broker, RTSP cameras.

Every address in Rollcall is configuration (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, camera URLs); this
module only provides working defaults on one machine for development, tests and demos::

    state = up(topics=[("frames", 4)], rtsp_mounts={"/cam1": Path("cam1.ts")})
    state.database_url              # postgresql://rollcall@127.0.0.1:PORT/rollcall
    state.kafka_bootstrap_servers   # 127.0.0.1:PORT
    state.rtsp_url("/cam1")         # rtsp://127.0.0.1:PORT/cam1
    status()                        # {"postgres": {"state": "running", ...}, ...}
    down()

Everything lives in stack_dir() (ROLLCALL_HOME/stack, or ROLLCALL_STACK_DIR): ``state.json`` (component -> pid, port, log,
start time; the ports are kept after ``down`` so the next ``up`` reuses them when free), ``logs/``,
``postgres/`` (the cluster; kept), ``rtsp_mounts.json``. Processes are started detached (own session)
and stopped by their recorded PID only, never by name (infra.devstack.processes). The broker keeps messages
in memory only: they are lost when it stops.

The components themselves: PostgreSQL in infra.devstack.postgres, the broker in infra.devstack.broker, the
RTSP server and its mounts file in infra.devstack.rtsp. This module plans their ports, starts and stops
them under the stack's lock, and records them in ``state.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from infra.devstack import broker, rtsp
from infra.devstack.ports import HOST, choose_free_port, port_is_free, wait_until
from infra.devstack.postgres import Cluster
from infra.devstack.processes import last_log_line, log_since, now, spawn_detached, terminate
from infra.devstack.rtsp import read_rtsp_mounts  # noqa: F401  (part of this module's interface)
from infra.foundation import db
from infra.foundation.config import Config
from infra.foundation.embedded import (  # noqa: F401  (the reading side, re-exported)
    ALIASES, COMPONENTS, StackState, alive, check_component, cmdline, current_state, database_url, load_state,
    proc_stat, rtsp_options_ok, same_process, state_path)
from infra.foundation.errors import RollcallError
from infra.foundation.paths import stack_dir

LABELS = {"postgres": "PostgreSQL", "kafka": "the Kafka broker (Tansu)", "rtsp": "the RTSP server"}
CONFIG_KEYS = {"postgres": "postgres_port", "kafka": "kafka_port", "rtsp": "rtsp_port"}
READY_TIMEOUT = {"postgres": 60.0, "kafka": 20.0, "rtsp": 20.0}


# --------------------------------------------------------------------------------------------- state
def logs_dir() -> Path:
    return stack_dir() / "logs"


def log_path(component: str) -> Path:
    return logs_dir() / f"{component}.log"


def _cluster() -> Cluster:
    return Cluster(stack_dir() / "postgres")


def _save(data: dict) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One stack operation at a time (two `up`s racing would start everything twice)."""
    stack_dir().mkdir(parents=True, exist_ok=True)
    with open(stack_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ RTSP mounts
def set_rtsp_mounts(mounts: Mapping[str, Path | str]) -> dict[str, str]:
    """(Re)write the RTSP mounts ({"/cam1": file.ts}) and make a running server re-read them (SIGHUP).

    Returns the mounts as written. Mounts missing from ``mounts`` are removed. Without a running server
    the file is just written; the next ``up`` serves it.
    """
    clean = rtsp.normalize_mounts(mounts)
    with _locked():
        return rtsp.apply_mounts(clean)


def change_rtsp_mounts(*, add: Mapping[str, Path | str] = {}, remove: Iterable[str] = ()) -> dict[str, str]:
    """Add and remove some mounts, keeping the others (read and written under the stack's lock): runs that
    share the stack (scenario runs, benchmarks) each touch only their own mounts."""
    with _locked():
        gone = {"/" + str(m).strip().lstrip("/") for m in remove}
        mounts = {k: v for k, v in read_rtsp_mounts().items() if k not in gone}
        return rtsp.apply_mounts({**mounts, **rtsp.normalize_mounts(add)})  # others' mounts as they are


# ---------------------------------------------------------------------------------------- up / down
def _plan_ports(data: dict, current: dict[str, str], wanted: dict[str, int]) -> dict[str, int]:
    """The port for each component; every check happens before anything starts."""
    ports: dict[str, int] = {}
    used: set[int] = set()
    for comp in COMPONENTS:
        record = data["components"].get(comp) or {}
        if current[comp] == "running":
            port = record["port"]
            if wanted[comp] and wanted[comp] != port:
                raise RollcallError(
                    f"{LABELS[comp]} is already running on port {port}, not {wanted[comp]}: run 'rollcall down' "
                    f"first, or set [stack] {CONFIG_KEYS[comp]} = {port}"
                )
            ports[comp] = port
            used.add(port)
    for comp in COMPONENTS:
        if comp in ports:
            continue
        if wanted[comp]:
            port = wanted[comp]
            if port in used or not port_is_free(port):
                raise RollcallError(
                    f"port {port} for {LABELS[comp]} is taken by another program: free it or set "
                    f"[stack] {CONFIG_KEYS[comp]} = 0 to choose one"
                )
        else:
            previous = data["ports"].get(comp)
            if previous and previous not in used and port_is_free(previous):
                port = previous
            else:
                port = choose_free_port(avoid=used)
        ports[comp] = port
        used.add(port)
    return ports


def _record(pid: int, port: int, log: Path, marker: str, started: float) -> dict:
    info = proc_stat(pid)
    return {"pid": pid, "port": port, "log": str(log), "marker": marker,
            "proc_start": info[1] if info else None, "started_at": now(),
            "ready_s": round(time.monotonic() - started, 3)}


def _wait_ready(comp: str, pid: int, port: int, log: Path, check) -> None:
    deadline = time.monotonic() + READY_TIMEOUT[comp]
    while time.monotonic() < deadline:
        if check():
            return
        if not alive(pid):
            raise RollcallError(
                f"{LABELS[comp]} exited while starting on port {port} ({last_log_line(log)}); see its log {log}"
            )
        time.sleep(0.03)
    raise RollcallError(
        f"{LABELS[comp]} did not become ready on {HOST}:{port} within {READY_TIMEOUT[comp]:.0f} s; see its log {log}"
    )


def _wait_ready_or_stop(comp: str, pid: int, port: int, log: Path, check) -> None:
    try:
        _wait_ready(comp, pid, port, log, check)
    except RollcallError:
        terminate(pid, timeout=3)  # never leave an unrecorded process behind
        raise


def _start_postgres(port: int, fast: bool) -> dict:
    started = time.monotonic()
    cluster, log = _cluster(), log_path("postgres")
    cluster.ensure_initialized(log, fast=fast)
    orphan = cluster.postmaster_pid()
    if orphan is not None and alive(orphan) and str(cluster.data) in cmdline(orphan):
        cluster.stop(timeout=30)  # our cluster, running but not recorded (state.json lost): restart it cleanly
    for attempt in range(5):
        cluster.remove_stale_locks(alive)
        before = log.stat().st_size if log.exists() else 0
        try:
            pid = cluster.start(port, log, fast=fast, timeout=READY_TIMEOUT["postgres"])
            break
        except RollcallError:
            # after a crash the old server's children may hold its shared memory for a moment
            said = log_since(log, before)
            if attempt == 4 or not ("shared memory" in said or "lock file" in said):
                raise
            time.sleep(0.5 * (attempt + 1))
    try:
        _wait_ready("postgres", pid, port, log, lambda: cluster.is_ready(port))
        cluster.ensure_database(port)
    except RollcallError:
        if not cluster.stop(timeout=10) and alive(pid):
            terminate(pid)
        raise
    return _record(pid, port, log, str(cluster.data), started)


def _start_kafka(port: int, binary: Path) -> dict:
    started = time.monotonic()
    log = log_path("kafka")
    pid = spawn_detached(broker.broker_command(binary, port), log)
    _wait_ready_or_stop("kafka", pid, port, log, lambda: broker.metadata_ok(port))
    return _record(pid, port, log, str(binary), started)


def _start_rtsp(port: int) -> dict:
    started = time.monotonic()
    log = log_path("rtsp")
    pid = spawn_detached(rtsp.server_command(port, log), log)
    _wait_ready_or_stop("rtsp", pid, port, log, lambda: rtsp_options_ok(port))
    return _record(pid, port, log, str(rtsp.RTSP_SCRIPT), started)


def _stop_component(comp: str, record: Mapping) -> None:
    pid = record.get("pid")
    if not pid or not same_process(record):
        return  # gone already, or the PID now belongs to another program: never touch it
    if comp == "postgres":
        _cluster().stop(timeout=30)
        if wait_until(lambda: not alive(pid), 5.0):
            return
    terminate(pid)


def up(*, pg_port: int = 0, kafka_port: int = 0, rtsp_port: int = 0,
       topics: list[tuple[str, int]] | tuple = (), rtsp_mounts: Mapping[str, Path | str] | None = None,
       fast_fsync_off: bool = False) -> StackState:
    """Bring the stack up; start only what is not running. Port 0: reuse the last port, else a free one.

    ``topics``: (name, partitions) to create on the broker (existing ones are fine).
    ``rtsp_mounts``: {"/cam1": file.ts} replaces the served mounts; None keeps the mounts file as it is.
    ``fast_fsync_off``: run PostgreSQL with fsync off (throwaway test clusters only).
    """
    wanted = {"postgres": int(pg_port), "kafka": int(kafka_port), "rtsp": int(rtsp_port)}
    clean_mounts = rtsp.normalize_mounts(rtsp_mounts) if rtsp_mounts is not None else None
    with _locked():
        logs_dir().mkdir(parents=True, exist_ok=True)
        data = load_state()
        current = {comp: check_component(comp, data["components"].get(comp))[0] for comp in COMPONENTS}
        for comp in COMPONENTS:
            if current[comp] == "crashed" and same_process(data["components"][comp]):
                _stop_component(comp, data["components"][comp])  # alive but not answering: hung, and holds its port
        ports = _plan_ports(data, current, wanted)
        to_start = [comp for comp in COMPONENTS if current[comp] != "running"]
        # everything that can fail before a process starts, fails here
        if "postgres" in to_start:
            _cluster().bindir
        tansu = broker.ensure_tansu() if "kafka" in to_start else None
        if "rtsp" in to_start:
            rtsp.check_prereqs()
        if clean_mounts is not None:
            rtsp.write_mounts(clean_mounts)

        timings = _start_components(data, to_start, ports, fast_fsync_off=fast_fsync_off, tansu=tansu)
        if "postgres" not in to_start:
            _cluster().ensure_database(ports["postgres"])
        if topics:
            broker.create_topics(broker.bootstrap_servers(ports["kafka"]), list(topics))
        if clean_mounts is not None and "rtsp" not in to_start:
            os.kill(data["components"]["rtsp"]["pid"], signal.SIGHUP)
            if not rtsp.wait_mounts_applied():
                raise RollcallError(
                    f"the RTSP server did not pick up the new mounts within 10 s; see its log {log_path('rtsp')}"
                )
        elif "rtsp" in to_start:
            rtsp.wait_mounts_applied()
        return StackState(pg_port=ports["postgres"], kafka_port=ports["kafka"], rtsp_port=ports["rtsp"],
                          pids={c: data["components"][c]["pid"] for c in COMPONENTS}, timings=timings,
                          components={c: dict(data["components"][c]) for c in COMPONENTS})


def _start_components(data: dict, to_start: list[str], ports: dict[str, int], *, fast_fsync_off: bool,
                      tansu: Path | None) -> dict[str, float]:
    """Start each component in ``to_start`` in turn, recording it in state.json (its port before it starts,
    its process once ready); the seconds each took to become ready."""
    timings: dict[str, float] = {}
    for comp in to_start:
        data["components"].pop(comp, None)
        data["ports"][comp] = ports[comp]
        _save(data)
        if comp == "postgres":
            record = _start_postgres(ports[comp], fast_fsync_off)
        elif comp == "kafka":
            record = _start_kafka(ports[comp], tansu)
        else:
            record = _start_rtsp(ports[comp])
        data["components"][comp] = record
        _save(data)
        timings[comp] = record["ready_s"]
    return timings


def down() -> list[str]:
    """Stop every recorded process by its PID (PostgreSQL with pg_ctl stop -m fast); keep the data.

    Returns the components whose process was stopped (empty when nothing was running). Crashed
    components are just forgotten; a recorded PID that now belongs to another program is never touched.
    """
    with _locked():
        data = load_state()
        stopped = []
        for comp in reversed(COMPONENTS):
            record = data["components"].get(comp)
            if record and same_process(record):
                _stop_component(comp, record)
                stopped.append(comp)
            data["components"].pop(comp, None)
            _save(data)
        return [comp for comp in COMPONENTS if comp in stopped]


def status() -> dict[str, dict]:
    """Each component: state (running / stopped / crashed), pid, port, url, log, started_at, detail."""
    data = load_state()
    report = {}
    for comp in COMPONENTS:
        record = data["components"].get(comp) or {}
        state, detail = check_component(comp, record)
        port = record.get("port") or data["ports"].get(comp)
        if comp == "postgres":
            url = database_url(port) if port else None
        elif comp == "kafka":
            url = broker.bootstrap_servers(port) if port else None
        else:
            url = f"rtsp://{HOST}:{port}/" if port else None
        entry = {"state": state, "pid": record.get("pid"), "port": port, "url": url,
                 "log": record.get("log") or str(log_path(comp)), "started_at": record.get("started_at"),
                 "detail": detail}
        if comp == "rtsp":
            entry["mounts"] = read_rtsp_mounts()
        report[comp] = entry
    return report


def start_embedded_stack(config: Config, rtsp_mounts=None):
    """`rollcall up` for this config: the embedded stack on the configured ports with the configured
    topics (``rtsp_mounts`` None keeps the served mounts), then the schema migrated. Returns
    (StackState, MigrationReport)."""
    state = up(
        pg_port=config.stack.postgres_port,
        kafka_port=config.stack.kafka_port,
        rtsp_port=config.stack.rtsp_port,
        topics=[(t.name, t.partitions, t.compacted) for t in config.kafka.topics.all()],
        rtsp_mounts=rtsp_mounts,
    )
    return state, db.migrate(state.database_url)


if __name__ == "__main__":  # a tiny manual entry point; the CLI is `rollcall up/down/status`
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "up":
        print(up())
    elif command == "down":
        print(down())
    else:
        print(json.dumps(status(), indent=2))
