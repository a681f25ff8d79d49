"""The SQL of the camera and door set-up pages (admin). The processors of a group read these rows every
``group.cameras_poll_s`` (processor/group/catalogue.py): what is saved here runs without a restart."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg

from dashboard.services import Problem
from infra.foundation.config import CameraConfig

CAMERA_COLUMNS = "id, name, role, room_id, url, analysis_fps, enabled, min_tracking_fps, slot"
MAX_SIGHTINGS = 20000  # of each kind, for a transit suggestion: the latest ones


async def cameras(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(f"SELECT {CAMERA_COLUMNS} FROM camera ORDER BY room_id, role, id")]


async def camera(conn, camera_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {CAMERA_COLUMNS} FROM camera WHERE id = $1", camera_id)
    return dict(row) if row else None


async def save_camera(conn, cam: CameraConfig, *, create: bool) -> None:
    """Create (409 when the id is taken) or update (404 when there is none). A camera's role may not change
    while a door uses it in its present role, nor its room while a door of another room uses it."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT true FROM room WHERE id = $1", cam.room):
            raise Problem(f"no room {cam.room!r}: add it on the Rooms page first", 400)
        if not create:
            await _check_doors_still_fit(conn, cam)
        args = (cam.id, cam.name, cam.role, cam.room, cam.url, cam.analysis_fps, cam.enabled)
        if create:
            status = await conn.execute("""INSERT INTO camera (id, name, role, room_id, url, analysis_fps, enabled)
                                           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""", *args)
        else:
            status = await conn.execute("""UPDATE camera SET name = $2, role = $3, room_id = $4, url = $5,
                                           analysis_fps = $6, enabled = $7, updated_at = now() WHERE id = $1""", *args)
    if status.split()[-1] != "1":
        raise (Problem(f"camera {cam.id!r} exists already: edit it in the list", 409) if create
               else Problem(f"no camera {cam.id!r}", 404))


async def _check_doors_still_fit(conn, cam: CameraConfig) -> None:
    for door in await conn.fetch("SELECT id, room_id, door_camera_id, room_camera_id FROM door "
                                 "WHERE door_camera_id = $1 OR room_camera_id = $1", cam.id):
        used_as = "door" if door["door_camera_id"] == cam.id else "room"
        if used_as != cam.role:
            raise Problem(f"door {door['id']} uses {cam.id} as its {used_as} camera: link another camera to "
                          f"the door before making this one a {cam.role} camera", 409)
        if door["room_id"] != cam.room:
            raise Problem(f"door {door['id']} of room {door['room_id']} uses {cam.id}: it stays in that room", 409)


async def set_enabled(conn, camera_id: str, enabled: bool) -> bool:
    status = await conn.execute("UPDATE camera SET enabled = $2, updated_at = now() WHERE id = $1",
                                camera_id, enabled)
    return status.split()[-1] == "1"


async def delete_camera(conn, camera_id: str) -> bool:
    """Delete the camera's row (False when there is none). Refused (409, naming the doors) while a door
    links it: a door needs both its cameras, and deleting the door with its drawn zone behind the admin's
    back would lose work. Its history stays: the event, track and attendance tables name cameras by id
    without a foreign key (migrations 0002, 0003), as `rollcall db load-config --prune` relies on too."""
    async with conn.transaction():
        linked = await conn.fetch("""SELECT id, CASE WHEN door_camera_id = $1 THEN 'door' ELSE 'room' END AS used_as
                                     FROM door WHERE door_camera_id = $1 OR room_camera_id = $1 ORDER BY id
                                     FOR UPDATE""", camera_id)
        if linked:
            doors_named = ", ".join(f"door {d['id']} (as its {d['used_as']} camera)" for d in linked)
            raise Problem(f"camera {camera_id} is linked to {doors_named}: link another camera to the door "
                          "or delete the door first", 409)
        status = await conn.execute("DELETE FROM camera WHERE id = $1", camera_id)
    return status.split()[-1] == "1"


async def delete_door(conn, door_id: str) -> bool:
    """Delete the door (its link and entry zone); its cameras stay, as does every event they gave."""
    return (await conn.execute("DELETE FROM door WHERE id = $1", door_id)).split()[-1] == "1"


async def doors(conn) -> list[dict[str, Any]]:
    rows = await conn.fetch("""SELECT id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s,
                                      transit_max_s, updated_at FROM door ORDER BY room_id, id""")
    return [{**dict(r), "entry_zone": json.loads(r["entry_zone"])} for r in rows]


async def door(conn, door_id: str) -> dict[str, Any] | None:
    return next((d for d in await doors(conn) if d["id"] == door_id), None)


async def save_zone(conn, door_id: str, zone: list[tuple[float, float]]) -> bool:
    status = await conn.execute("UPDATE door SET entry_zone = $2::jsonb, updated_at = now() WHERE id = $1",
                                door_id, json.dumps([list(p) for p in zone]))
    return status.split()[-1] == "1"


async def save_door(conn, door_id: str, door_camera: str, room_camera: str, transit_min_s: float,
                    transit_max_s: float) -> None:
    """Link the door camera to the room camera and set the transit window: both cameras of the door's
    room, in the roles their names say (else 400), the door there (else 404)."""
    room = await conn.fetchval("SELECT room_id FROM door WHERE id = $1", door_id)
    if room is None:
        raise Problem(f"no door {door_id!r}", 404)
    await check_cameras(conn, room, door_camera, room_camera)
    try:
        await conn.execute("""UPDATE door SET door_camera_id = $2, room_camera_id = $3, transit_min_s = $4,
                              transit_max_s = $5, updated_at = now() WHERE id = $1""",
                           door_id, door_camera, room_camera, transit_min_s, transit_max_s)
    except asyncpg.CheckViolationError as exc:
        raise Problem(f"the door's values were refused: {exc.constraint_name}", 400) from None


async def create_door(conn, door_id: str, room: str, door_camera: str, room_camera: str,
                      zone: list[tuple[float, float]], transit_min_s: float, transit_max_s: float) -> None:
    """A new door (409 when the id is taken), its cameras checked as :func:`save_door` checks them."""
    await check_cameras(conn, room, door_camera, room_camera)
    status = await conn.execute(
        """INSERT INTO door (id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s, transit_max_s)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) ON CONFLICT DO NOTHING""",
        door_id, room, door_camera, room_camera, json.dumps([list(p) for p in zone]), transit_min_s, transit_max_s)
    if status.split()[-1] != "1":
        raise Problem(f"door {door_id!r} exists already: edit it in the list", 409)


async def check_cameras(conn, room: str, door_camera: str, room_camera: str) -> None:
    """A 400 unless both cameras are of ``room``, in the roles their places at the door say."""
    for camera_id, role in ((door_camera, "door"), (room_camera, "room")):
        row = await conn.fetchrow("SELECT role, room_id FROM camera WHERE id = $1", camera_id)
        if row is None or row["role"] != role or row["room_id"] != room:
            raise Problem(f"{camera_id!r} is not a {role} camera of room {room}", 400)


async def sightings(conn, door_camera: str, room_camera: str, days: float) -> tuple[list[float], list[float]]:
    """Unix times of the door camera's recognitions and of the room camera's track entries (their first
    sighting) over the last ``days``, from the writer's raw event log."""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    query = """SELECT extract(epoch FROM {column}) AS t FROM presence_event
               WHERE kind = $1 AND camera_id = $2 AND frame_time >= $3 ORDER BY frame_time DESC LIMIT $4"""
    recognitions = await conn.fetch(query.format(column="frame_time"), "recognition", door_camera, since,
                                    MAX_SIGHTINGS)
    entries = await conn.fetch(query.format(column="first_seen"), "enter", room_camera, since, MAX_SIGHTINGS)
    return sorted(float(r["t"]) for r in recognitions), sorted(float(r["t"]) for r in entries)
