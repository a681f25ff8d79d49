"""The embedded RTSP camera server (infra/devstack/rtsp_server.py, run by the system Python) and its mounts
file: what it needs installed, the command that starts it, and the mounts it serves.

The mounts file (``rtsp_mounts.json`` in stack_dir()) maps a mount path to an MPEG-TS file; the server
re-reads it on SIGHUP and answers with ``rtsp_mounts.json.applied``. The functions here do not take the
stack's lock: infra.devstack.stack does, around them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Mapping

from infra.devstack.ports import wait_until
from infra.foundation.embedded import load_state, same_process
from infra.foundation.errors import RollcallError
from infra.foundation.paths import stack_dir

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
RTSP_PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")


# ---------------------------------------------------------------------------------------------- server
def check_prereqs() -> None:
    """The system Python with GStreamer's RTSP server and the pipeline's elements, or a RollcallError
    naming the packages to install."""
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


def server_command(port: int, log: Path) -> list[str]:
    """The server on ``port`` serving the mounts file (written empty first when there is none)."""
    if not mounts_path().exists():
        write_mounts({})
    return [SYSTEM_PYTHON, "-I", str(RTSP_SCRIPT), "--port", str(port), "--mounts", str(mounts_path()),
            "--log", str(log)]


# ---------------------------------------------------------------------------------------------- mounts
def mounts_path() -> Path:
    return stack_dir() / "rtsp_mounts.json"


def _looks_like_mpeg_ts(path: Path) -> bool:
    """MPEG-TS packets are 188 bytes, each starting with the sync byte 0x47."""
    with path.open("rb") as handle:
        head = handle.read(188 * 4)
    return len(head) >= 188 and all(head[i] == 0x47 for i in range(0, len(head) - 187, 188))


def normalize_mounts(mounts: Mapping[str, Path | str]) -> dict[str, str]:
    """{"/mount": absolute path} for {mount: file}, each file checked to exist and to be MPEG-TS."""
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


def write_mounts(mounts: dict[str, str]) -> None:
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


def wait_mounts_applied(timeout: float = 10.0) -> bool:
    """Wait for the server's ``<mounts>.applied`` file to show the mounts file's current content."""
    target = read_rtsp_mounts()
    applied = mounts_path().with_name(mounts_path().name + ".applied")

    def done() -> bool:
        try:
            return json.loads(applied.read_text()).get("source") == target
        except (OSError, ValueError):
            return False

    return wait_until(done, timeout)


def apply_mounts(clean: dict[str, str]) -> dict[str, str]:
    """Write the mounts file and make a running server re-read it (the caller holds the stack's lock)."""
    write_mounts(clean)
    record = load_state()["components"].get("rtsp")
    if record and same_process(record):
        os.kill(record["pid"], signal.SIGHUP)
        if not wait_mounts_applied():
            raise RollcallError(
                f"the RTSP server did not pick up the new mounts within 10 s; see its log {record.get('log')}"
            )
    return clean
