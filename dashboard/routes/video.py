"""A camera's annotated video: WebRTC, the MJPEG fallback, one snapshot (faculty: while one of their
sessions runs in its room, and until it ends)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from dashboard.forms import VIDEO_OFFER_PROBLEM, VideoOffer, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import STAFF, body, live_rooms, stream_slot

ROUTES = RouteTable()


async def _feed(request: Request):
    """The camera's feed and until when (Unix time, None: no end) this user may watch it."""
    services = services_of(request)
    camera_id = request.path_params["camera_id"]
    camera = next((c for c in await services.cameras() if c.id == camera_id), None)  # the campus's, as PostgreSQL holds it
    live = await live_rooms(request)
    if live is not None and (camera is None or camera.room not in live):
        raise Problem(f"camera {camera_id!r}: none of your sessions is running in its room now", 403)
    feed = services.video.feeds.get(camera_id) if services.video else None
    if feed is None:
        raise Problem(f"no camera {camera_id!r} with video", 404)
    return services, feed, (live[camera.room][1].timestamp() if live is not None else None)


@ROUTES.api("/api/video/{camera_id}/offer", STAFF, methods=("POST",))
async def video_offer(request: Request) -> Response:
    """WebRTC: send the browser's SDP offer ({sdp, type}); the answer carries the annotated video track.
    A connection that does not connect within ``dashboard.video_connect_timeout_s`` is closed."""
    services, feed, until = await _feed(request)
    offer = parse(VideoOffer, await body(request), problem=VIDEO_OFFER_PROBLEM)
    with stream_slot(request) as release:
        try:
            answer = await services.video.answer(feed.camera.id, offer.sdp, "offer", on_close=release, until=until)
        except OverflowError as exc:
            raise Problem(str(exc), 503) from None
        except ValueError as exc:
            raise Problem(f"the offer was refused: {exc}") from None
    return JSONResponse(answer)


@ROUTES.api("/api/video/{camera_id}/mjpeg", STAFF)
async def video_mjpeg(request: Request) -> Response:
    """The annotated video as MJPEG (multipart/x-mixed-replace): the fallback where WebRTC cannot connect."""
    services, feed, until = await _feed(request)
    with stream_slot(request) as release:
        feed.acquire()

    async def stream():
        seq = 0
        try:
            while until is None or time.time() < until:
                seq, frame = await feed.next_frame(seq)
                data = await feed.jpeg(seq, frame)
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                       + b"\r\n\r\n" + data + b"\r\n")
        finally:
            feed.release()
            release()

    return StreamingResponse(stream(), media_type="multipart/x-mixed-replace; boundary=frame",
                             headers={"Cache-Control": "no-cache, no-store"})


@ROUTES.api("/api/video/{camera_id}/snapshot.jpg", STAFF)
async def video_snapshot(request: Request) -> Response:
    """One annotated frame (JPEG), the newest: starts the camera's feed for a few seconds if it is idle."""
    services, feed, _ = await _feed(request)
    feed.acquire()
    try:
        seq, frame = await feed.next_frame(feed.seq if feed.source is not None else 0, timeout=3)
        data = await feed.jpeg(seq, frame)
    finally:
        feed.release()
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
