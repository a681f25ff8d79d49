"""Live video: each camera decoded by the dashboard itself, annotated, served over WebRTC and MJPEG.

Design: the processor publishes what it sees (overlay.v1 events: boxes, labels, track ids) at analysis
rate, not pictures. The dashboard opens the camera's own stream (the same RTSP URL, resolved like the
processor's: "embedded:<mount>" through infra/foundation/camera_urls.py) with the processor's ingest code
(:class:`processor.ingest.CameraSource`: PyAV, reconnect with backoff, keyframe resync), and draws onto
each frame the camera's latest overlay event (when younger than 3 s) and the doors' entry zones. The cameras
and zones are the campus's in PostgreSQL (:meth:`VideoHub.sync`, from dashboard/services.py): a camera added
in the dashboard has video without a restart. One :class:`CameraFeed` per camera, started by its first viewer and stopped 10 s after its last,
renders at ``dashboard.video_fps`` and ``video_width`` once for every viewer; viewers are aiortc
:class:`FeedTrack` s (WebRTC) and MJPEG streams (the fallback).

Boxes and video come from two decodes of one stream, and the processor's overlay for a frame arrives a
few hundred ms after it: frames are shown ``dashboard.video_delay_s`` late (0.5 s) with the overlay
analysed nearest each frame's capture time (within 0.5 s; else the newest one), so boxes stay on their
people; the overlay's age is shown in the picture's header.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fractions
import logging
import time
from collections import deque
from typing import Any, Callable

import cv2
import numpy as np
from processor.api import CameraSource, IngestOptions
from infra.foundation.camera_urls import resolve_camera_url

log = logging.getLogger("rollcall.dashboard.video")

VIDEO_CLOCK = 90_000
GRACE_S = 10.0
COLOURS = {"known": (80, 200, 60), "unknown": (40, 140, 255), "pending": (200, 200, 200)}  # BGR
ZONE_COLOUR = (255, 200, 0)


def _label_kind(obj: dict) -> str:
    if obj.get("person_id"):
        return "known"
    return "unknown" if obj.get("label") == "unknown" else "pending"


def draw_overlay(image: np.ndarray | None, overlay: dict | None, *, width: int, title: str, state: str,
                 zones: list[list[tuple[float, float]]] = (), source_size: tuple[int, int] | None = None,
                 overlay_age_s: float | None = None) -> np.ndarray:
    """The annotated picture: ``image`` (BGR, any size) scaled to ``width``, the overlay's boxes with
    their labels and track ids, the entry zones, and a header with the camera, its state and the time.
    ``image`` None draws a grey placeholder (16:9) saying the state."""
    if image is None:
        height = width * 9 // 16
        out = np.full((height, width, 3), 48, np.uint8)
        src_w, src_h = source_size or (width, height)
    else:
        src_h, src_w = image.shape[:2]
        height = max(2, int(round(src_h * width / src_w / 2)) * 2)
        out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    sx, sy = width / src_w, height / src_h

    for zone in zones:
        points = np.array([[x * sx, y * sy] for x, y in zone], np.int32)
        layer = out.copy()
        cv2.fillPoly(layer, [points], ZONE_COLOUR)
        cv2.addWeighted(layer, 0.18, out, 0.82, 0, out)
        cv2.polylines(out, [points], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        cv2.putText(out, "entry zone", (int(points[:, 0].min()) + 4, int(points[:, 1].max()) - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, ZONE_COLOUR, 1, cv2.LINE_AA)

    objects = overlay.get("objects", []) if overlay else []
    if overlay:
        fw, fh = overlay["frame_size"]["width"], overlay["frame_size"]["height"]
        ox, oy = width / fw, height / fh
        for obj in objects:
            box = obj["box"]
            x1, y1, x2, y2 = (int(box["x1"] * ox), int(box["y1"] * oy), int(box["x2"] * ox), int(box["y2"] * oy))
            colour = COLOURS[_label_kind(obj)]
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2, cv2.LINE_AA)
            text = f"{obj.get('label') or 'unknown'} #{obj['track_id']}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            ty = max(th + 4, y1)
            cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty), colour, -1)
            cv2.putText(out, text, (x1 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)

    cv2.rectangle(out, (0, 0), (width, 22), (0, 0, 0), -1)
    now = dt.datetime.now().strftime("%H:%M:%S")
    age = f"  overlay {overlay_age_s * 1000:.0f} ms" if overlay is not None and overlay_age_s is not None else ""
    header = f"{title}  [{state}]  {len(objects)} tracked{age}  {now}"
    cv2.putText(out, header, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (255, 255, 255), 1, cv2.LINE_AA)
    if image is None:
        cv2.putText(out, f"{state.lower()}...", (width // 2 - 60, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (220, 220, 220), 2, cv2.LINE_AA)
    return out


class CameraFeed:
    """One camera's annotated picture, rendered at ``fps`` while anyone watches."""

    def __init__(self, camera, url: str, *, zones: list, overlay: Callable[[str, float | None], dict | None],
                 width: int, fps: float, source_factory: Callable[..., Any] | None = None,
                 resolve_url: Callable[[str], str] | None = None, delay_s: float = 0.0):
        self.camera = camera
        self.url = url
        self._resolve_url = resolve_url or (lambda url: url)
        self.zones = zones
        self._overlay = overlay
        self.width = width
        self.fps = fps
        self._source_factory = source_factory
        self.source = None
        self.viewers = 0
        self.frame: np.ndarray = draw_overlay(None, None, width=width, title=self.title, state="STOPPED")
        self.seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._stop_handle: asyncio.TimerHandle | None = None
        self._last_image: np.ndarray | None = None
        # frames (capture time, image) of the last 2 s: each is shown delay_s late, with the overlay of
        # the analysis of that moment (the processor's events arrive a few hundred ms after the frame)
        self._recent: deque = deque(maxlen=max(2, int(2 * fps)))
        self.delay_s = delay_s
        self.rendered = 0

    @property
    def title(self) -> str:
        return f"{self.camera.name or self.camera.id} ({self.camera.id})"

    @property
    def state(self) -> str:
        state = self.source.state if self.source is not None else None
        return str(state) if state is not None else "STOPPED"

    def acquire(self) -> None:
        self.viewers += 1
        if self._stop_handle is not None:
            self._stop_handle.cancel()
            self._stop_handle = None
        if self._task is None:
            self._start()

    def release(self) -> None:
        self.viewers = max(0, self.viewers - 1)
        if self.viewers == 0 and self._task is not None and self._stop_handle is None:
            self._stop_handle = asyncio.get_running_loop().call_later(GRACE_S, self._stop)

    def _start(self) -> None:

        factory = self._source_factory or CameraSource
        self.source = factory(f"dashboard-{self.camera.id}", self.url, analysis_fps=self.fps,
                              options=IngestOptions(buffer_capacity=1, hwaccel="none"),
                              resolve_url=self._resolve_url).start()
        self._task = asyncio.create_task(self._render_loop(), name=f"video-{self.camera.id}")

    def _stop(self) -> None:
        self._stop_handle = None
        if self.viewers:
            return
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.source is not None:
            self.source.stop()
            self.source = None
        self._last_image = None
        self._recent.clear()

    async def close(self) -> None:
        self.viewers = 0
        task = self._task
        self._stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _render_loop(self) -> None:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while True:
            frame = self.source.buffer.take() if self.source is not None else None
            if frame is not None:
                # converted to BGR on first use (processor.frames.Frame): in a thread, off this loop
                image = frame.image if frame.converted else await asyncio.to_thread(getattr, frame, "image")
                self._recent.append((frame.captured_at, image))
            shown_at = None
            if self._recent:
                due = [item for item in self._recent if item[0] <= time.time() - self.delay_s]
                shown_at, self._last_image = due[-1] if due else self._recent[0]
            overlay = self._overlay(self.camera.id, shown_at)
            age = None
            if overlay is not None and overlay.get("published_at"):
                try:
                    published = dt.datetime.fromisoformat(overlay["published_at"].replace("Z", "+00:00"))
                    age = max(0.0, time.time() - published.timestamp())
                except ValueError:
                    age = None
            image = self._last_image
            if image is not None and self.source is not None and self.source.last_frame_at is not None \
                    and time.time() - self.source.last_frame_at > 5:
                image = None  # the camera stopped sending: say so rather than freeze the last frame
            picture = await asyncio.to_thread(
                draw_overlay, image, overlay, width=self.width, title=self.title, state=self.state,
                zones=self.zones, overlay_age_s=age)
            async with self._changed:
                self.frame = picture
                self.seq += 1
                self.rendered += 1
                self._changed.notify_all()
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:
                next_at = time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def next_frame(self, after_seq: int, timeout: float = 5.0) -> tuple[int, np.ndarray]:
        async with self._changed:
            if self.seq <= after_seq:
                try:
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(lambda: self.seq > after_seq)
                except asyncio.TimeoutError:
                    pass
            return self.seq, self.frame

    async def jpeg(self, seq: int, frame: np.ndarray) -> bytes:
        cached = self._jpeg
        if cached is not None and cached[0] == seq:
            return cached[1]
        ok, data = await asyncio.to_thread(cv2.imencode, ".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
        self._jpeg = (seq, data.tobytes())
        return self._jpeg[1]


def feed_track_class():
    """aiortc's MediaStreamTrack subclass (imported lazily: aiortc is heavy)."""
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class FeedTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, feed: CameraFeed):
            super().__init__()
            self.feed = feed
            self._seq = 0
            self._start: float | None = None
            self._pts = 0
            self._released = False
            feed.acquire()

        async def recv(self):
            if self.readyState != "live":
                from aiortc.mediastreams import MediaStreamError

                raise MediaStreamError
            step = int(VIDEO_CLOCK / self.feed.fps)
            if self._start is None:
                self._start = time.monotonic()
            else:
                self._pts += step
                wait = self._start + self._pts / VIDEO_CLOCK - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._seq, image = await self.feed.next_frame(self._seq, timeout=1.0 / self.feed.fps)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = self._pts
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            return frame

        def stop(self) -> None:
            super().stop()
            if not self._released:
                self._released = True
                self.feed.release()

    return FeedTrack


def _zones_of(camera_id: str, doors) -> list:
    return [list(d.entry_zone) for d in doors if d.room_camera == camera_id]


class VideoHub:
    """The camera feeds and the WebRTC peer connections of one dashboard process."""

    def __init__(self, config, camera_urls: dict[str, str], overlay: Callable[[str, float | None], dict | None], *,
                 source_factory=None):
        """The feeds of the config file's cameras in ``camera_urls`` until :meth:`sync` gives the campus's."""
        self.config = config
        self._overlay = overlay
        self._source_factory = source_factory
        self.feeds: dict[str, CameraFeed] = {}
        for camera in config.cameras:
            if camera.enabled and camera.id in camera_urls:
                self.feeds[camera.id] = self._feed(camera, camera_urls[camera.id], _zones_of(camera.id, config.doors))
        self.peers: set = set()
        self.max_peers = config.dashboard.max_video_peers
        self.connect_timeout_s = config.dashboard.video_connect_timeout_s
        self.timed_out = 0  # negotiations closed for not connecting in time

    def _feed(self, camera, url: str, zones: list) -> CameraFeed:
        # "embedded:<mount>" resolved at every (re)connect, as the processors do
        d = self.config.dashboard
        return CameraFeed(camera, url, zones=zones, overlay=self._overlay, width=d.video_width, fps=d.video_fps,
                          delay_s=d.video_delay_s, source_factory=self._source_factory, resolve_url=resolve_camera_url)

    async def sync(self, cameras, doors, camera_urls: dict[str, str]) -> dict[str, list[str]]:
        """Feeds for the enabled ``cameras`` (the campus's), reading ``camera_urls[id]`` where given, else the
        camera's URL: one added, a deleted or disabled one closed, one whose URL changed made again; the
        others keep their viewers, with the camera's name and its doors' entry zones as they are now."""
        wanted = {c.id: c for c in cameras if c.enabled}
        closing = [self.feeds.pop(camera_id) for camera_id in list(self.feeds) if camera_id not in wanted]
        changes: dict[str, list[str]] = {"added": [], "removed": [f.camera.id for f in closing], "remade": []}
        for camera in wanted.values():
            url, zones = camera_urls.get(camera.id, camera.url), _zones_of(camera.id, doors)
            feed = self.feeds.get(camera.id)
            if feed is not None and feed.url == url:
                feed.camera, feed.zones = camera, zones
                continue
            if feed is not None:
                closing.append(feed)
            self.feeds[camera.id] = self._feed(camera, url, zones)
            changes["remade" if feed is not None else "added"].append(camera.id)
        for feed in closing:  # after the table is whole again: a request meanwhile sees the new feeds
            await feed.close()
        if any(changes.values()):
            log.info("video feeds: %s", "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v))
        return changes

    async def answer(self, camera_id: str, sdp: str, sdp_type: str, *, on_close: Callable[[], None] = lambda: None,
                     until: float | None = None) -> dict:
        """Answer a browser's offer with the camera's track. The connection is closed when it has not
        connected within ``dashboard.video_connect_timeout_s`` (an offer whose ICE never completes would
        otherwise hold a place in the peer table for ever), when it fails, and at ``until`` (Unix time:
        the end of the viewer's right to watch); ``on_close`` runs once, whichever ends it."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        feed = self.feeds[camera_id]
        if len(self.peers) >= self.max_peers:
            raise OverflowError(f"{len(self.peers)} video connections open: at most dashboard.max_video_peers")
        pc = RTCPeerConnection()
        self.peers.add(pc)
        track = feed_track_class()(feed)
        ended = False

        async def end(reason: str) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            for timer in timers:
                if timer is not asyncio.current_task():
                    timer.cancel()
            track.stop()
            self.peers.discard(pc)
            on_close()
            log.info("video %s: connection closed (%s)", camera_id, reason)
            await pc.close()

        async def deadline(delay: float, reason: str, unless_connected: bool) -> None:
            await asyncio.sleep(max(0.0, delay))
            if unless_connected and pc.connectionState == "connected":
                return
            if unless_connected:
                self.timed_out += 1
            await end(reason)

        timers = [asyncio.create_task(deadline(self.connect_timeout_s, "did not connect in time", True))]
        if until is not None:
            timers.append(asyncio.create_task(deadline(until - time.time(), "the viewer's session ended", False)))

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                await end(pc.connectionState)

        try:
            pc.addTrack(track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=sdp_type))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await end("the offer was refused")
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.peers)), return_exceptions=True)
        self.peers.clear()
        for feed in self.feeds.values():
            await feed.close()

    def status(self) -> dict:
        return {cid: {"state": f.state if f.source else "idle", "viewers": f.viewers, "rendered": f.rendered}
                for cid, f in self.feeds.items()}
