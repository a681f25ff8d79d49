"""Doors (admin): each door's cameras (the door camera linked to its room camera), its transit window with
the window suggested from observed transits (dashboard/transit.py), which the admin accepts or edits, and
its entry zone drawn as a polygon on the room camera's live snapshot. Saved in PostgreSQL, where the
processors of a group read it (processor/group/catalogue.py): the room stage's tracker takes a redrawn
zone on the next read, without a restart. A door deleted (after a confirmation) takes its link and zone
with it; its cameras and their events stay."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dashboard import camera_queries as q
from dashboard.camera_forms import DoorForm, NewDoorForm, ZoneForm
from dashboard.camera_probe import ProbeFailed, grab
from dashboard.forms import parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.setup_rows import change_or_404, confirmed, row_or_404
from dashboard.transit import single_arrival_transits, suggest
from dashboard.web import ADMIN, body, done, render

ROUTES = RouteTable()
SUGGESTION_DAYS = 14  # the transits of the last this many days


@ROUTES.page("/setup/doors", ADMIN)
async def doors_page(request: Request) -> Response:
    """Every door: its cameras, transit window and the suggested one, and a link to draw its entry zone."""
    async with services_of(request).conn() as conn:
        doors, cameras = await q.doors(conn), await q.cameras(conn)
        for door in doors:
            door["suggestion"] = suggest(single_arrival_transits(
                *await q.sightings(conn, door["door_camera_id"], door["room_camera_id"], SUGGESTION_DAYS)))
    for door in doors:
        door["door_cameras"] = [c["id"] for c in cameras if c["role"] == "door" and c["room_id"] == door["room_id"]]
        door["room_cameras"] = [c["id"] for c in cameras if c["role"] == "room" and c["room_id"] == door["room_id"]]
    return render(request, "setup_doors.html", {
        "doors": doors, "days": SUGGESTION_DAYS, "door_cameras": [c for c in cameras if c["role"] == "door"],
        "room_cameras": [c for c in cameras if c["role"] == "room"]})


@ROUTES.api("/setup/doors", ADMIN, methods=("POST",))
async def create_door(request: Request) -> Response:
    """A new door; its entry zone starts as the room camera's whole picture (a snapshot says its size),
    to be drawn next."""
    form = parse(NewDoorForm, await body(request))
    async with services_of(request).conn() as conn:
        await q.check_cameras(conn, form.room, form.door_camera.strip(), form.room_camera.strip())
        room_camera = await q.camera(conn, form.room_camera.strip())
    try:
        picture = await grab(room_camera["url"], allow_files=services_of(request).config.dashboard.allow_file_cameras)
    except ProbeFailed as exc:
        raise Problem(f"the room camera {room_camera['id']} gives no picture to place the entry zone on: {exc}",
                      400) from None
    whole = [(0.0, 0.0), (float(picture.width), 0.0), (float(picture.width), float(picture.height)),
             (0.0, float(picture.height))]
    async with services_of(request).conn() as conn:
        await q.create_door(conn, form.id, form.room, form.door_camera.strip(), room_camera["id"], whole,
                            form.transit_min_s, form.transit_max_s)
    services_of(request).forget_campus()
    return done(request, {"door": form.id}, f"door {form.id} added: draw its entry zone now", 201)


@ROUTES.api("/setup/doors/{door_id}", ADMIN, methods=("POST",))
async def save_door(request: Request) -> Response:
    """The door camera and room camera of the door, and its transit window (seconds)."""
    door_id = request.path_params["door_id"]
    form = parse(DoorForm, await body(request))
    async with services_of(request).conn() as conn:
        await q.save_door(conn, door_id, form.door_camera.strip(), form.room_camera.strip(), form.transit_min_s,
                          form.transit_max_s)
    services_of(request).forget_campus()
    return done(request, {"door": door_id}, f"door {door_id} saved: {form.door_camera} → {form.room_camera}, "
                                            f"transit {form.transit_min_s:g}–{form.transit_max_s:g} s")


@ROUTES.page("/setup/doors/{door_id}/zone", ADMIN)
async def zone_page(request: Request) -> Response:
    """The room camera's snapshot with the door's entry zone over it, to redraw point by point."""
    return render(request, "setup_zone.html", {"door": await row_or_404(request, "door", q.door)})


@ROUTES.api("/setup/doors/{door_id}/zone", ADMIN, methods=("POST",))
async def save_zone(request: Request) -> Response:
    """``{"zone": [[x, y], ...]}``: the entry zone in pixels of the room camera's picture."""
    zone = parse(ZoneForm, await body(request)).zone
    door_id = await change_or_404(request, "door", lambda conn, did: q.save_zone(conn, did, zone))
    return done(request, {"door": door_id, "zone": zone}, f"entry zone of {door_id} saved ({len(zone)} points)")


@ROUTES.api("/setup/doors/{door_id}/delete", ADMIN, methods=("POST",))
async def delete_door(request: Request) -> Response:
    """Delete a door (``confirm``: its id): its link and entry zone go; its cameras and their events stay."""
    confirmed(request, await body(request), "door")
    door_id = await change_or_404(request, "door", q.delete_door)
    return done(request, {"door": door_id, "deleted": True}, f"door {door_id} deleted")
