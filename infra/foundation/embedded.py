"""What the embedded development stack (`rollcall up`) left running, read from its state file.

The one place the services learn where an ``embedded`` address answers: ``infra.foundation.endpoints``
turns ``embedded`` settings into URLs with it. The stack that writes the state file (starting and
stopping PostgreSQL, the broker and the RTSP server) is ``infra.devstack.stack``, a layer above; this
module only reads the file and probes what it names, so runtime code never imports the development stack.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from infra.foundation.paths import stack_dir

HOST = "127.0.0.1"
COMPONENTS = ("postgres", "kafka", "rtsp")
ALIASES = {"broker": "kafka", "database": "postgres", "postgresql": "postgres", "cameras": "rtsp"}
DB_USER = "rollcall"
DB_NAME = "rollcall"


def database_url(port: int) -> str:
    return f"postgresql://{DB_USER}@{HOST}:{port}/{DB_NAME}"


def bootstrap_servers(port: int) -> str:
    return f"{HOST}:{port}"


@dataclass(frozen=True)
class StackState:
    """Where the running embedded stack answers."""

    pg_port: int
    kafka_port: int
    rtsp_port: int
    pids: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds to ready, for what this `up` started
    components: dict[str, dict] = field(default_factory=dict, repr=False)  # the state.json records

    @property
    def database_url(self) -> str:
        return database_url(self.pg_port)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return bootstrap_servers(self.kafka_port)

    def rtsp_url(self, mount: str) -> str:
        return f"rtsp://{HOST}:{self.rtsp_port}/{mount.lstrip('/')}"

    def is_running(self, component: str) -> bool:
        """Checked now: the recorded process is alive, the same program, and its port answers.

        ``component``: postgres, kafka (or broker), rtsp.
        """
        name = ALIASES.get(component, component)
        return check_component(name, self.components.get(name))[0] == "running"


def state_path() -> Path:
    return stack_dir() / "state.json"


def load_state() -> dict:
    try:
        data = json.loads(state_path().read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError):
        data = {}  # unreadable state: treat as nothing recorded (processes are found again by port)
    data.setdefault("ports", {})
    data.setdefault("components", {})
    return data


def current_state() -> StackState | None:
    """The recorded stack (whatever its processes' state: see StackState.is_running), or None when
    `up` never ran here."""
    data = load_state()
    ports = data["ports"]
    if not all(ports.get(c) for c in COMPONENTS):
        return None
    records = {c: dict(r) for c, r in data["components"].items() if r.get("pid")}
    return StackState(pg_port=ports["postgres"], kafka_port=ports["kafka"], rtsp_port=ports["rtsp"],
                      pids={c: r["pid"] for c, r in records.items()}, components=records)


# ------------------------------------------------------------------------------------------ processes
def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a live process, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    info = proc_stat(pid)
    return info is not None and info[0] not in ("Z", "X")  # a zombie is dead (PID 1 here reaps late)


def same_process(record: Mapping) -> bool:
    """The recorded PID is still the process we started: alive, same start time, same command line."""
    pid = record.get("pid")
    if not pid:
        return False
    info = proc_stat(pid)
    if info is None or info[0] in ("Z", "X"):
        return False
    if record.get("proc_start") is not None and info[1] != record["proc_start"]:
        return False
    return record.get("marker", "") in cmdline(pid)


# ---------------------------------------------------------------------------------------------- probes
def port_answers(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def rtsp_options_ok(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """An RTSP OPTIONS request is answered with 200."""
    request = f"OPTIONS rtsp://{host}:{port}/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: rollcall-stack\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request.encode())
            answer = sock.recv(1024)
    except OSError:
        return False
    return answer.startswith(b"RTSP/1.0 200")


def metadata_ok(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """Send a Kafka Metadata v0 request; true when a well-formed answer naming a broker comes back."""
    client_id = b"rollcall-stack"
    correlation = 0x524C  # "RL"
    body = struct.pack(">hhih", 3, 0, correlation, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            if not 8 <= size <= 1 << 20:
                return False
            answer = _recv_exact(sock, size)
    except (OSError, struct.error, ConnectionError):
        return False
    got_correlation, brokers = struct.unpack(">ii", answer[:8])
    return got_correlation == correlation and brokers >= 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def answers(component: str, port: int) -> bool:
    if component == "kafka":
        return metadata_ok(port)
    if component == "rtsp":
        return rtsp_options_ok(port)
    return port_answers(port)


def check_component(component: str, record: Mapping | None) -> tuple[str, str]:
    """(running | stopped | crashed, detail)."""
    if not record or not record.get("pid"):
        return "stopped", ""
    pid, port = record["pid"], record.get("port")
    if not same_process(record):
        return "crashed", f"process {pid} is gone (see {record.get('log', '')})"
    if not port or not answers(component, port):
        return "crashed", f"process {pid} runs but port {port} does not answer (see {record.get('log', '')})"
    return "running", ""
