"""A loopback RTSP "camera" server for the embedded stack: loops MPEG-TS H.264 files.

Run by the *system* Python (``/usr/bin/python3``), where Debian's python3-gi and the GStreamer RTSP
server bindings live; it must not import anything from the project's virtualenv (standard library
and ``gi`` only). Debian packages: gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad.

    /usr/bin/python3 infra/devstack/rtsp_server.py --port 8554 --mounts mounts.json [--log rtsp.log]

``mounts.json`` maps a mount path to an MPEG-TS file: ``{"/cam1": "/abs/cam1.ts", ...}``. It is read at
start and again on SIGHUP, so mounts can be added, changed or removed without a restart (clients already
playing a removed mount keep playing until they disconnect). After each read the server writes
``mounts.json.applied`` ({"source": what it read, "served": what it serves}). SIGTERM/SIGINT stop it.

Each mount is shared media (one pipeline per mount, however many clients), started by its first client and
then kept playing by the server until the mount is removed, as a real camera plays whoever watches::

    multifilesrc location=FILE loop=true ! tsdemux ! h264parse ! rtph264pay name=pay0 pt=96

and reports itself NOT seekable: FFmpeg/PyAV clients send ``Range: npt=0.000-`` in PLAY, and a seek on
tsdemux answers 5XX, so the SEEKING query is failed by a pad probe on the payloader. Raw ``.h264`` input
has no timestamps (corrupt frames); use MPEG-TS. Encodes with x264 ``tune=zerolatency`` (multi-slice)
came out corrupted through this path; use a normal preset.

Clients: PyAV ``av.open(url, options={"rtsp_transport": "tcp", "analyzeduration": "500000"})``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 (after the versions are pinned)

log = logging.getLogger("rollcall.rtsp")

# NOTE: config-interval=-1 on h264parse/rtph264pay garbled the decoded pictures (wrong references, no
# decoder error) in a test here; x264 muxed into MPEG-TS already repeats SPS/PPS at every IDR.
PIPELINE = "( multifilesrc location={location} loop=true ! tsdemux ! h264parse ! rtph264pay name=pay0 pt=96 )"


def _gst_quote(path: str) -> str:
    # gst-launch syntax: a double-quoted string with backslash escapes
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_mounts(path: str) -> dict[str, str]:
    """The mounts file as {"/mount": "/abs/file.ts"}; raises ValueError when it is malformed."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    data = json.loads(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("the mounts file must hold a JSON object {\"/mount\": \"/abs/file.ts\"}")
    mounts = {}
    for mount, location in data.items():
        if not isinstance(mount, str) or not mount.startswith("/") or not isinstance(location, str):
            raise ValueError(f"bad mount entry {mount!r}: {location!r}")
        mounts[mount] = location
    return mounts


class MountServer:
    """The RTSP server, its mounts kept in step with the mounts file (re-read on SIGHUP)."""

    def __init__(self, host: str, port: int, mounts_file: str):
        self.mounts_file = mounts_file
        self.server = GstRtspServer.RTSPServer()
        # Clients get their own threads: one slow media preparation (a broken file) must not stall the others.
        self.server.get_thread_pool().set_max_threads(64)
        self.server.set_address(host)
        self.server.set_service(str(port))
        self.mount_points = self.server.get_mount_points()
        self.current: dict[str, str] = {}  # mount -> the file it serves
        self.held: dict[str, GstRtspServer.RTSPMedia] = {}  # mount -> its media, kept playing by the server

    def _on_media_configure(self, factory, media, mount):
        element = media.get_element()
        pay = element.get_by_name("pay0")
        pay.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, _refuse_seeking)
        # The server holds one preparation of its own, so the media plays on like a real camera once its first
        # client came. Without it the last client's leaving unprepares the shared media, and a client whose
        # DESCRIBE arrives in that moment is still handed the dying media and answered 503 (one late client in
        # two here). Runs that must start a video afresh use a new mount path.
        if media.prepare(None):
            self.held[mount] = media
        log.info("media prepared for %s (%s)", mount, factory.location)

    def _release(self, mount: str) -> None:
        """Drop the server's own hold on a removed mount's media (its clients, if any, play on)."""
        media = self.held.pop(mount, None)
        if media is not None:
            media.unprepare()

    def load_mounts(self) -> None:
        """Serve what the mounts file says now: remove, change and add mounts (a missing file is skipped)."""
        try:
            wanted = read_mounts(self.mounts_file)
        except (OSError, ValueError) as exc:
            log.error("cannot read mounts file %s (%s); keeping the current mounts", self.mounts_file, exc)
            return
        current, mount_points = self.current, self.mount_points
        for mount in sorted(set(current) - set(wanted)):
            mount_points.remove_factory(mount)
            self._release(mount)
            log.info("removed mount %s", mount)
            del current[mount]
        for mount, location in sorted(wanted.items()):
            if current.get(mount) == location:
                continue
            if not os.path.isfile(location):
                log.error("mount %s: file %s does not exist; skipped", mount, location)
                if mount in current:
                    mount_points.remove_factory(mount)
                    self._release(mount)
                    del current[mount]
                continue
            if mount in current:
                mount_points.remove_factory(mount)
                self._release(mount)
            mount_points.add_factory(mount, _media_factory(mount, location, self._on_media_configure))
            current[mount] = location
            log.info("mount %s -> %s", mount, location)
        self._write_applied(wanted)

    def _write_applied(self, wanted: dict[str, str]) -> None:
        # tells `set_rtsp_mounts` (which waits for it) that this content of the mounts file is served
        applied = self.mounts_file + ".applied"
        try:
            with open(applied + ".partial", "w", encoding="utf-8") as handle:
                json.dump({"source": wanted, "served": self.current, "pid": os.getpid()}, handle)
            os.replace(applied + ".partial", applied)
        except OSError as exc:
            log.error("cannot write %s (%s)", applied, exc)

    def serve_until_stopped(self) -> None:
        """Run the main loop: SIGHUP re-reads the mounts file, SIGTERM/SIGINT stop; idle sessions are
        cleaned up every 2 s."""
        loop = GLib.MainLoop()

        def on_sighup():
            log.info("SIGHUP: re-reading %s", self.mounts_file)
            self.load_mounts()
            return GLib.SOURCE_CONTINUE

        def on_stop():
            log.info("stopping")
            loop.quit()
            return GLib.SOURCE_REMOVE

        def clean_sessions():
            self.server.get_session_pool().cleanup()
            return GLib.SOURCE_CONTINUE

        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGHUP, on_sighup)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, on_stop)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, on_stop)
        GLib.timeout_add_seconds(2, clean_sessions)
        loop.run()


def _media_factory(mount: str, location: str, on_configure):
    """Shared media looping ``location`` (one pipeline however many clients), not seekable."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(location=_gst_quote(location)))
    factory.set_shared(True)
    factory.location = location
    factory.connect("media-configure", on_configure, mount)
    return factory


def _refuse_seeking(pad, info):
    query = info.get_query()
    if query is not None and query.type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.DROP  # a dropped, unhandled query answers FALSE: not seekable
    return Gst.PadProbeReturn.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mounts", required=True, help="JSON file {\"/mount\": \"/abs/file.ts\"}")
    parser.add_argument("--log", help="log file (default: stderr)")
    args = parser.parse_args(argv)

    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s rtsp: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    Gst.init(None)
    server = MountServer(args.host, args.port, args.mounts)
    server.load_mounts()
    if server.server.attach(None) == 0:
        log.error("cannot listen on %s:%s (port taken?)", args.host, args.port)
        return 1
    # the server binds when attached; report the port actually bound
    log.info("listening on rtsp://%s:%s/ with %d mount(s)", args.host, server.server.get_bound_port(),
             len(server.current))
    server.serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
