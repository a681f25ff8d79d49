"""Campus set-up (admin): rooms and courses, listed, created and edited in PostgreSQL (the tables
`rollcall db load-config` imports the TOML file into). Rosters and the timetable: :mod:`dashboard.routes.plans`."""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from dashboard import campus_queries as q
from dashboard.forms import CourseForm, RoomForm, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, body, done, render

ROUTES = RouteTable()


@ROUTES.page("/setup/rooms", ADMIN)
async def rooms_page(request: Request) -> Response:
    """Rooms: the list (cameras and timetable entries of each), a new room, a room's name and capacity."""
    async with services_of(request).conn() as conn:
        return render(request, "setup_rooms.html", {"rooms": await q.rooms(conn)})


@ROUTES.api("/setup/rooms", ADMIN, methods=("POST",))
async def create_room(request: Request) -> Response:
    return await _save_room(request, create=True)


@ROUTES.api("/setup/rooms/{room_id}", ADMIN, methods=("POST",))
async def edit_room(request: Request) -> Response:
    return await _save_room(request, create=False)


@ROUTES.page("/setup/courses", ADMIN)
async def courses_page(request: Request) -> Response:
    """Courses: the list with their attendance policy, a new course, a course's name and policy."""
    async with services_of(request).conn() as conn:
        return render(request, "setup_courses.html", {"courses": await q.courses(conn)})


@ROUTES.api("/setup/courses", ADMIN, methods=("POST",))
async def create_course(request: Request) -> Response:
    return await _save_course(request, create=True)


@ROUTES.api("/setup/courses/{course_id}", ADMIN, methods=("POST",))
async def edit_course(request: Request) -> Response:
    return await _save_course(request, create=False)


async def _save_room(request: Request, *, create: bool) -> Response:
    room = parse(RoomForm, await _fields(request))
    return await _save(request, "room", room.id, create,
                       lambda conn: q.save_room(conn, room.id, room.name.strip(), room.capacity, create=create))


async def _save_course(request: Request, *, create: bool) -> Response:
    course = parse(CourseForm, await _fields(request))
    values = {**course.model_dump(include=set(q.COURSE_FIELDS)), "name": course.name.strip()}
    return await _save(request, "course", course.id, create,
                       lambda conn: q.save_course(conn, course.id, values, create=create))


async def _fields(request: Request) -> dict:
    """The form's fields; an edit's id is the one in its path, whatever the form says."""
    path_id = next(iter(request.path_params.values()), None)
    return {**await body(request), **({"id": path_id} if path_id is not None else {})}


async def _save(request: Request, what: str, item_id: str, create: bool,
                saving: Callable[[object], Awaitable[bool]]) -> Response:
    """Create (409 when the id is taken) or update (404 when there is none) one room or course."""
    async with services_of(request).conn() as conn:
        if not await saving(conn):
            raise (Problem(f"{what} {item_id!r} exists already: edit it in the list", 409) if create
                   else Problem(f"no {what} {item_id!r}", 404))
    # the campus snapshot of this process read again (rooms, courses); other dashboard processes within 5 s
    services_of(request).forget_campus()
    return done(request, {what: item_id}, f"{what} {item_id} {'added' if create else 'saved'}", 201 if create else 200)
