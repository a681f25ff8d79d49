"""Live: the camera grid, the presence board, recent events and the server-sent event feed (faculty:
the rooms of their sessions running now, see :func:`dashboard.web.live_rooms`)."""

from __future__ import annotations

import asyncio
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from dashboard.auth import Scope
from dashboard.guard import RouteTable
from dashboard.live import FEED_TYPES, visible
from dashboard.services import LIVE_CACHE_S, Problem, Services, services_of
from dashboard.web import STAFF, current_scope, current_user, live_rooms, render, since_of, stream_slot

ROUTES = RouteTable()
KEEP_ALIVE_S = 15


async def _cameras_json(services: Services, scope: Scope, live: dict | None) -> list[dict]:
    """The campus's cameras (PostgreSQL, as the cameras page lists them) this user may see."""
    out = []
    for camera in await services.cameras():
        watchable = live is None or camera.room in live
        if not camera.enabled or not (scope.camera(camera.id) or watchable):
            continue
        feed = services.video.feeds.get(camera.id) if services.video else None
        processor = services.metrics.cameras.get(camera.id, {}) if services.metrics else {}
        out.append({"id": camera.id, "name": camera.name, "role": camera.role, "room_id": camera.room,
                    "video": feed is not None, "feed_state": feed.state if feed and feed.source else "idle",
                    "processor_state": processor.get("state"), "live": watchable})
    return out


@ROUTES.page("/live", STAFF)
async def live_page(request: Request) -> Response:
    """Live: camera grid (WebRTC, MJPEG fallback), live event feed, presence board (faculty: the rooms of
    their sessions running now)."""
    services = services_of(request)
    live = await live_rooms(request)
    cameras = [c for c in await _cameras_json(services, current_scope(request), live) if c["live"]]
    return render(request, "live.html", {"cameras": cameras,
                                         "rooms": [r for r in (await services.campus()).rooms if live is None or r.id in live]})


@ROUTES.api("/api/cameras", STAFF)
async def cameras(request: Request) -> Response:
    """The cameras of this user's rooms, with the video feed's and the processor's state; ``live``: whether
    they may watch it now (faculty: one of their sessions is running in its room)."""
    live = await live_rooms(request)
    return JSONResponse({"cameras": await _cameras_json(services_of(request), current_scope(request), live)})


async def _board(request: Request) -> list[dict]:
    services = services_of(request)
    since = since_of(await live_rooms(request))
    rooms = [r.id for r in (await services.campus()).rooms if since is None or r.id in since]
    board = services.hub.presence_board(rooms)
    names = await services.names()
    for room in board:
        if since is not None:  # tracks of this session's window only, not the class before
            room["tracks"] = [t for t in room["tracks"] if str(t["last_seen"]) >= since[room["room_id"]]]
            room["people"] = len(room["tracks"])
            room["known"] = sum(t["identity"] == "known" for t in room["tracks"])
        for track in room["tracks"]:
            track["name"] = names.get(track["person_id"]) if track["person_id"] else None
    return board


@ROUTES.api("/api/presence", STAFF)
async def presence(request: Request) -> Response:
    """The presence board: per room, the person tracks in it now (from presence events) and the latest count;
    faculty: the rooms of their sessions running now."""
    return JSONResponse({"rooms": await _board(request), "feed": services_of(request).hub.status()["state"]})


@ROUTES.api("/api/events/recent", STAFF)
async def recent_events(request: Request) -> Response:
    """The latest recognition and presence events (up to 200) this user may see, newest last (faculty: of
    their sessions running now, since each one's window began)."""
    since = since_of(await live_rooms(request))
    return JSONResponse({"events": [e for e in services_of(request).hub.recent if visible(e, since)]})


@ROUTES.api("/api/events/stream", STAFF)
async def event_stream(request: Request) -> Response:
    """Server-sent events from Kafka as they arrive: recognition, presence, occupancy (``?types=`` to choose);
    faculty: of the rooms of their sessions, as those begin and end."""
    services = services_of(request)
    wanted = [t for t in (request.query_params.get("types") or ",".join(FEED_TYPES)).split(",") if t]
    unknown = [t for t in wanted if t not in FEED_TYPES]
    if unknown:
        raise Problem(f"unknown event type {unknown[0][:40]!r}: choose from {', '.join(FEED_TYPES)}")
    with stream_slot(request) as release:
        sub = services.hub.subscribe(since_of(await live_rooms(request)), wanted)
        if sub is None:
            raise Problem("too many live clients on this dashboard process", 503)
    return StreamingResponse(_sse(request, sub, release), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})


async def _sse(request: Request, sub, release):
    services = services_of(request)
    try:
        yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'feed': services.hub.state})}\n\n".encode()
        user, scope = current_user(request), current_scope(request)
        quiet = time.monotonic()  # when something was last sent (a keep-alive after 15 s of nothing)
        refresh_at = quiet + LIVE_CACHE_S
        while True:
            if sub.rooms is not None and time.monotonic() >= refresh_at:
                # their sessions begin and end while they watch
                sub.rooms = since_of(await services.live_rooms(user, scope, fresh=True))
                refresh_at = time.monotonic() + LIVE_CACHE_S
            wake_at = min(refresh_at, quiet + KEEP_ALIVE_S) if sub.rooms is not None else quiet + KEEP_ALIVE_S
            try:
                async with asyncio.timeout(max(0.05, wake_at - time.monotonic())):
                    message = await sub.queue.get()
            except asyncio.TimeoutError:
                if time.monotonic() >= quiet + KEEP_ALIVE_S:
                    quiet = time.monotonic()
                    yield b": keep-alive\n\n"
                continue
            quiet = time.monotonic()
            yield _drain(sub.queue, message)
    finally:
        services.hub.unsubscribe(sub)
        release()


def _drain(queue: asyncio.Queue, first: bytes, most: int = 100) -> bytes:
    """``first`` and what else is waiting in ``queue`` (up to ``most`` messages), as one chunk."""
    chunk = [first]
    while not queue.empty() and len(chunk) < most:
        chunk.append(queue.get_nowait())
    return b"".join(chunk)
