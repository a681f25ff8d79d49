"""Cameras (admin): the list from PostgreSQL with each camera's state, fps and drops as the health page
shows them (the processors' /metrics), a camera added, edited, disabled or enabled by URL, its connection
test (one line: codec, size and rate, or the error) and a live snapshot (one decoded frame as JPEG, to the
admin who asked, stored nowhere), and a camera deleted (after a confirmation; refused while a door links it,
its past events kept). Processors pick a change up on their next read of the camera table (processor/group/
catalogue.py), without a restart. A URL that reads local files (``file://``) is refused unless
``dashboard.allow_file_cameras``: its test, snapshot and live video would show an admin the dashboard's files."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import camera_queries as q
from dashboard.camera_forms import CameraForm, EnabledForm
from dashboard.camera_probe import ProbeFailed, check_local_files, grab
from dashboard.forms import parse
from dashboard.guard import RouteTable
from dashboard.routes.system import CAMERA_METRICS
from dashboard.services import Problem, services_of
from dashboard.setup_rows import change_or_404, confirmed, row_or_404
from infra.foundation.camera_urls import redact
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
    camera = _checked(request, parse(CameraForm, await body(request)).camera())
    async with services_of(request).conn() as conn:
        await q.save_camera(conn, camera, create=True)
    services_of(request).forget_campus()
    return done(request, {"camera": camera.id}, f"camera {camera.id} added", 201)


@ROUTES.api("/setup/cameras/{camera_id}", ADMIN, methods=("POST",))
async def edit_camera(request: Request) -> Response:
    camera = _checked(request, parse(CameraForm, {**await body(request), "id": request.path_params["camera_id"]}).camera())
    async with services_of(request).conn() as conn:
        await q.save_camera(conn, camera, create=False)
    services_of(request).forget_campus()
    return done(request, {"camera": camera.id}, f"camera {camera.id} saved")


@ROUTES.api("/setup/cameras/{camera_id}/enabled", ADMIN, methods=("POST",))
async def enable_camera(request: Request) -> Response:
    """Disable (``enabled`` empty) or enable a camera: its processor stops or starts it."""
    enabled = parse(EnabledForm, await body(request)).enabled
    camera_id = await change_or_404(request, "camera", lambda conn, cid: q.set_enabled(conn, cid, enabled))
    return done(request, {"camera": camera_id, "enabled": enabled},
                f"camera {camera_id} {'enabled' if enabled else 'disabled'}")


@ROUTES.api("/setup/cameras/{camera_id}/delete", ADMIN, methods=("POST",))
async def delete_camera(request: Request) -> Response:
    """Delete a camera (``confirm``: its id): the processors drop its stream on their next read; its past
    events stay in the records under its id. 409 naming the doors that link it."""
    confirmed(request, await body(request), "camera")
    camera_id = await change_or_404(request, "camera", q.delete_camera)
    return done(request, {"camera": camera_id, "deleted": True},
                f"camera {camera_id} deleted: its past events stay in the records")


@ROUTES.api("/setup/cameras/{camera_id}/test", ADMIN, methods=("POST",))
async def test_camera(request: Request) -> Response:
    """Open the camera's URL now: ``{"ok": true, "result": "ok: h264 1280x720 at 25 fps"}`` or the error."""
    camera = await row_or_404(request, "camera", q.camera)
    try:
        picture = await grab(camera["url"], allow_files=_files_allowed(request))
    except ProbeFailed as exc:
        return JSONResponse({"camera": camera["id"], "ok": False, "result": f"failed: {exc}"})
    return JSONResponse({"camera": camera["id"], "ok": True, "result": picture.summary(),
                         "width": picture.width, "height": picture.height})


@ROUTES.page("/setup/cameras/{camera_id}/snapshot.jpg", ADMIN)
async def snapshot(request: Request) -> Response:
    """One frame decoded now, as JPEG (not cached, not stored); 502 with the reason when there is none."""
    camera = await row_or_404(request, "camera", q.camera)
    try:
        picture = await grab(camera["url"], allow_files=_files_allowed(request))
    except ProbeFailed as exc:
        raise Problem(f"no picture from {camera['id']}: {exc}", 502) from None
    return Response(picture.jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Picture-Size": f"{picture.width}x{picture.height}"})


def _files_allowed(request: Request) -> bool:
    return services_of(request).config.dashboard.allow_file_cameras


def _checked(request: Request, camera):
    """The camera, unless its URL reads local files where the settings do not allow it (400)."""
    check_local_files(camera.url, _files_allowed(request))
    return camera
