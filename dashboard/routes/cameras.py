"""Cameras (admin): the list from PostgreSQL with each camera's state, fps and drops as the health page
shows them (the processors' /metrics), a camera added, edited, disabled or enabled by URL, its connection
test (one line: codec, size and rate, or the error) and a live snapshot (one decoded frame as JPEG, to the
admin who asked, stored nowhere). Processors of a group pick the change up on their next catalogue read."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import camera_queries as q
from dashboard.camera_forms import CameraForm, EnabledForm
from dashboard.camera_probe import ProbeFailed, grab, redact
from dashboard.forms import parse
from dashboard.guard import RouteTable
from dashboard.routes.system import CAMERA_METRICS
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, body, done, render

ROUTES = RouteTable()


@ROUTES.page("/setup/cameras", ADMIN)
async def cameras_page(request: Request) -> Response:
    """Every camera with its health, the form for a new one, and each one's edit form and tests."""
    services = services_of(request)
    async with services.conn() as conn:
        cameras, rooms = await q.cameras(conn), [r["id"] for r in await conn.fetch("SELECT id FROM room ORDER BY id")]
    metrics = services.metrics.cameras if services.metrics else {}
    for camera in cameras:
        seen = metrics.get(camera["id"], {})
        # beside the row, not in it: the metrics' analysis_fps is the rate analysed, the row's the rate asked
        camera["health"] = {"state": seen.get("state"), **{name: seen.get(name) for name in CAMERA_METRICS}}
        camera["shown_url"] = redact(camera["url"])
    return render(request, "setup_cameras.html", {"cameras": cameras, "rooms": rooms})


@ROUTES.api("/setup/cameras", ADMIN, methods=("POST",))
async def create_camera(request: Request) -> Response:
    camera = parse(CameraForm, await body(request)).camera()
    async with services_of(request).conn() as conn:
        await q.save_camera(conn, camera, create=True)
    return done(request, {"camera": camera.id}, f"camera {camera.id} added", 201)


@ROUTES.api("/setup/cameras/{camera_id}", ADMIN, methods=("POST",))
async def edit_camera(request: Request) -> Response:
    camera = parse(CameraForm, {**await body(request), "id": request.path_params["camera_id"]}).camera()
    async with services_of(request).conn() as conn:
        await q.save_camera(conn, camera, create=False)
    return done(request, {"camera": camera.id}, f"camera {camera.id} saved")


@ROUTES.api("/setup/cameras/{camera_id}/enabled", ADMIN, methods=("POST",))
async def enable_camera(request: Request) -> Response:
    """Disable (``enabled`` empty) or enable a camera: its processor stops or starts it."""
    camera_id = request.path_params["camera_id"]
    enabled = parse(EnabledForm, await body(request)).enabled
    async with services_of(request).conn() as conn:
        if not await q.set_enabled(conn, camera_id, enabled):
            raise Problem(f"no camera {camera_id!r}", 404)
    return done(request, {"camera": camera_id, "enabled": enabled},
                f"camera {camera_id} {'enabled' if enabled else 'disabled'}")


@ROUTES.api("/setup/cameras/{camera_id}/test", ADMIN, methods=("POST",))
async def test_camera(request: Request) -> Response:
    """Open the camera's URL now: ``{"ok": true, "result": "ok: h264 1280x720 at 25 fps"}`` or the error."""
    url = await _url_of(request)
    try:
        picture = await grab(url)
    except ProbeFailed as exc:
        return JSONResponse({"camera": request.path_params["camera_id"], "ok": False, "result": f"failed: {exc}"})
    return JSONResponse({"camera": request.path_params["camera_id"], "ok": True, "result": picture.summary(),
                         "width": picture.width, "height": picture.height})


@ROUTES.page("/setup/cameras/{camera_id}/snapshot.jpg", ADMIN)
async def snapshot(request: Request) -> Response:
    """One frame decoded now, as JPEG (not cached, not stored); 502 with the reason when there is none."""
    try:
        picture = await grab(await _url_of(request))
    except ProbeFailed as exc:
        raise Problem(f"no picture from {request.path_params['camera_id']}: {exc}", 502) from None
    return Response(picture.jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Picture-Size": f"{picture.width}x{picture.height}"})


async def _url_of(request: Request) -> str:
    camera_id = request.path_params["camera_id"]
    async with services_of(request).conn() as conn:
        camera = await q.camera(conn, camera_id)
    if camera is None:
        raise Problem(f"no camera {camera_id!r}", 404)
    return camera["url"]
