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
and stopped by their recorded PID only, never by name. The broker keeps messages in memory only: they
are lost when it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from infra.devstack import broker
from infra.foundation.embedded import (  # noqa: F401  (the reading side, re-exported)
    ALIASES, COMPONENTS, StackState, alive, check_component, cmdline, load_state, proc_stat, same_process,
    current_state, rtsp_options_ok, state_path)
from infra.foundation import db
from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from infra.foundation.paths import stack_dir
from infra.devstack.ports import HOST, choose_free_port, port_answers, port_is_free, wait_until
from infra.devstack.postgres import Cluster

LABELS = {"postgres": "PostgreSQL", "kafka": "the Kafka broker (Tansu)", "rtsp": "the RTSP server"}
CONFIG_KEYS = {"postgres": "postgres_port", "kafka": "kafka_port", "rtsp": "rtsp_port"}
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
RTSP_PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")
READY_TIMEOUT = {"postgres": 60.0, "kafka": 20.0, "rtsp": 20.0}
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------- state
def logs_dir() -> Path:
    return stack_dir() / "logs"


def log_path(component: str) -> Path:
    return logs_dir() / f"{component}.log"


def mounts_path() -> Path:
    return stack_dir() / "rtsp_mounts.json"


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


# ------------------------------------------------------------------------------------------ processes
def _spawn_detached(argv: list[str], log: Path) -> int:
    """Start argv in its own session, reparented away from us, output appended to log; return its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"--- {_now()} rollcall starting: {shlex.join(argv)}\n")
    # sh backgrounds the command (exec'd directly, so $! is its PID) and exits: the command is
    # reparented to init, in the new session sh got, with no tie to our terminal or process group.
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    result = subprocess.run(["/bin/sh", "-c", script, "rollcall-spawn", str(log), *argv],
                            capture_output=True, text=True, start_new_session=True, timeout=30)
    try:
        return int(result.stdout.strip())
    except ValueError:
        raise RollcallError(f"could not start {argv[0]} ({result.stderr.strip()[:200]}); see {log}") from None


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _last_log_line(log: Path) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines()
                     if ln.strip() and " rollcall starting: " not in ln]
    except OSError:
        return ""
    return lines[-1][:200] if lines else "no output"


# ---------------------------------------------------------------------------------------------- probes
# ------------------------------------------------------------------------------------------ RTSP mounts
def _looks_like_mpeg_ts(path: Path) -> bool:
    """MPEG-TS packets are 188 bytes, each starting with the sync byte 0x47."""
    with path.open("rb") as handle:
        head = handle.read(188 * 4)
    return len(head) >= 188 and all(head[i] == 0x47 for i in range(0, len(head) - 187, 188))


def _normalize_mounts(mounts: Mapping[str, Path | str]) -> dict[str, str]:
    clean = {}
    for mount, file in mounts.items():
        mount = "/" + str(mount).strip().lstrip("/")
        if mount == "/" or any(c.isspace() for c in mount):
            raise RollcallError(f"RTSP mount {mount!r}: use a path like /cam1 (no spaces)")
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise RollcallError(f"RTSP mount {mount}: video file {path} does not exist; render or fix it first")
        if not _looks_like_mpeg_ts(path):
            # A non-TS file makes the GStreamer server stall every new connection for ~20 s.
            raise RollcallError(f"RTSP mount {mount}: {path} is not an MPEG-TS file (no 0x47 sync bytes); "
                                "serve H.264 in MPEG-TS (.ts)")
        clean[mount] = str(path)
    return clean


def _write_mounts(mounts: dict[str, str]) -> None:
    path = mounts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(mounts, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def read_rtsp_mounts() -> dict[str, str]:
    try:
        return json.loads(mounts_path().read_text())
    except (OSError, ValueError):
        return {}


def _wait_mounts_applied(timeout: float = 10.0) -> bool:
    """Wait for the server's ``<mounts>.applied`` file to show the mounts file's current content."""
    target = read_rtsp_mounts()
    applied = mounts_path().with_name(mounts_path().name + ".applied")

    def done() -> bool:
        try:
            return json.loads(applied.read_text()).get("source") == target
        except (OSError, ValueError):
            return False

    return wait_until(done, timeout)


def set_rtsp_mounts(mounts: Mapping[str, Path | str]) -> dict[str, str]:
    """(Re)write the RTSP mounts ({"/cam1": file.ts}) and make a running server re-read them (SIGHUP).

    Returns the mounts as written. Mounts missing from ``mounts`` are removed. Without a running server
    the file is just written; the next ``up`` serves it.
    """
    clean = _normalize_mounts(mounts)
    with _locked():
        return _apply_mounts(clean)


def change_rtsp_mounts(*, add: Mapping[str, Path | str] = {}, remove: Iterable[str] = ()) -> dict[str, str]:
    """Add and remove some mounts, keeping the others (read and written under the stack's lock): runs that
    share the stack (scenario runs, benchmarks) each touch only their own mounts."""
    with _locked():
        gone = {"/" + str(m).strip().lstrip("/") for m in remove}
        mounts = {k: v for k, v in read_rtsp_mounts().items() if k not in gone}
        return _apply_mounts({**mounts, **_normalize_mounts(add)})  # others' mounts as they are


def _apply_mounts(clean: dict[str, str]) -> dict[str, str]:
    """Write the mounts file and make a running server re-read it (the caller holds the lock)."""
    _write_mounts(clean)
    record = load_state()["components"].get("rtsp")
    if record and same_process(record):
        os.kill(record["pid"], signal.SIGHUP)
        if not _wait_mounts_applied():
            raise RollcallError(
                f"the RTSP server did not pick up the new mounts within 10 s; see its log {record.get('log')}"
            )
    return clean


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


def _check_rtsp_prereqs() -> None:
    if not Path(SYSTEM_PYTHON).is_file():
        raise RollcallError(f"the RTSP server needs the system Python {SYSTEM_PYTHON}: apt-get install python3 {RTSP_PACKAGES}")
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
             "('multifilesrc', 'tsdemux', 'h264parse', 'rtph264pay')) else 3)")
    result = subprocess.run([SYSTEM_PYTHON, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RollcallError(
            f"the RTSP server needs GStreamer's RTSP server and plugins for {SYSTEM_PYTHON}: "
            f"apt-get install {RTSP_PACKAGES}"
        )


def _record(pid: int, port: int, log: Path, marker: str, started: float) -> dict:
    info = proc_stat(pid)
    return {"pid": pid, "port": port, "log": str(log), "marker": marker,
            "proc_start": info[1] if info else None, "started_at": _now(),
            "ready_s": round(time.monotonic() - started, 3)}


def _wait_ready(comp: str, pid: int, port: int, log: Path, check) -> None:
    deadline = time.monotonic() + READY_TIMEOUT[comp]
    while time.monotonic() < deadline:
        if check():
            return
        if not alive(pid):
            raise RollcallError(
                f"{LABELS[comp]} exited while starting on port {port} ({_last_log_line(log)}); see its log {log}"
            )
        time.sleep(0.03)
    raise RollcallError(
        f"{LABELS[comp]} did not become ready on {HOST}:{port} within {READY_TIMEOUT[comp]:.0f} s; see its log {log}"
    )


def _wait_ready_or_stop(comp: str, pid: int, port: int, log: Path, check) -> None:
    try:
        _wait_ready(comp, pid, port, log, check)
    except RollcallError:
        _terminate(pid, timeout=3)  # never leave an unrecorded process behind
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
            said = _log_since(log, before)
            if attempt == 4 or not ("shared memory" in said or "lock file" in said):
                raise
            time.sleep(0.5 * (attempt + 1))
    try:
        _wait_ready("postgres", pid, port, log, lambda: cluster.is_ready(port))
        cluster.ensure_database(port)
    except RollcallError:
        if not cluster.stop(timeout=10) and alive(pid):
            _terminate(pid)
        raise
    return _record(pid, port, log, str(cluster.data), started)


def _log_since(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""


def _start_kafka(port: int, binary: Path) -> dict:
    started = time.monotonic()
    log = log_path("kafka")
    pid = _spawn_detached(broker.broker_command(binary, port), log)
    _wait_ready_or_stop("kafka", pid, port, log, lambda: broker.metadata_ok(port))
    return _record(pid, port, log, str(binary), started)


def _start_rtsp(port: int) -> dict:
    started = time.monotonic()
    log = log_path("rtsp")
    if not mounts_path().exists():
        _write_mounts({})
    argv = [SYSTEM_PYTHON, "-I", str(RTSP_SCRIPT), "--port", str(port), "--mounts", str(mounts_path()),
            "--log", str(log)]
    pid = _spawn_detached(argv, log)
    _wait_ready_or_stop("rtsp", pid, port, log, lambda: rtsp_options_ok(port))
    return _record(pid, port, log, str(RTSP_SCRIPT), started)


def _stop_component(comp: str, record: Mapping) -> None:
    pid = record.get("pid")
    if not pid or not same_process(record):
        return  # gone already, or the PID now belongs to another program: never touch it
    if comp == "postgres":
        _cluster().stop(timeout=30)
        if wait_until(lambda: not alive(pid), 5.0):
            return
    _terminate(pid)


def up(*, pg_port: int = 0, kafka_port: int = 0, rtsp_port: int = 0,
       topics: list[tuple[str, int]] | tuple = (), rtsp_mounts: Mapping[str, Path | str] | None = None,
       fast_fsync_off: bool = False) -> StackState:
    """Bring the stack up; start only what is not running. Port 0: reuse the last port, else a free one.

    ``topics``: (name, partitions) to create on the broker (existing ones are fine).
    ``rtsp_mounts``: {"/cam1": file.ts} replaces the served mounts; None keeps the mounts file as it is.
    ``fast_fsync_off``: run PostgreSQL with fsync off (throwaway test clusters only).
    """
    wanted = {"postgres": int(pg_port), "kafka": int(kafka_port), "rtsp": int(rtsp_port)}
    clean_mounts = _normalize_mounts(rtsp_mounts) if rtsp_mounts is not None else None
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
            _check_rtsp_prereqs()
        if clean_mounts is not None:
            _write_mounts(clean_mounts)

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
        if "postgres" not in to_start:
            _cluster().ensure_database(ports["postgres"])
        if topics:
            broker.create_topics(broker.bootstrap_servers(ports["kafka"]), list(topics))
        if clean_mounts is not None and "rtsp" not in to_start:
            os.kill(data["components"]["rtsp"]["pid"], signal.SIGHUP)
            if not _wait_mounts_applied():
                raise RollcallError(
                    f"the RTSP server did not pick up the new mounts within 10 s; see its log {log_path('rtsp')}"
                )
        elif "rtsp" in to_start:
            _wait_mounts_applied()
        return StackState(pg_port=ports["postgres"], kafka_port=ports["kafka"], rtsp_port=ports["rtsp"],
                          pids={c: data["components"][c]["pid"] for c in COMPONENTS}, timings=timings,
                          components={c: dict(data["components"][c]) for c in COMPONENTS})


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
        topics=[(t.name, t.partitions) for t in config.kafka.topics.all()],
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
