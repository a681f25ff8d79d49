"""Campus set-up (admin): rooms and courses, listed, created and edited in PostgreSQL (the tables
`rollcall db load-config` imports the TOML file into). Rosters and the timetable: :mod:`dashboard.routes.plans`."""

from __future__ import annotations

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
    room = parse(RoomForm, await body(request))
    async with services_of(request).conn() as conn:
        if not await q.save_room(conn, room.id, room.name.strip(), room.capacity, create=True):
            raise Problem(f"room {room.id!r} exists already: edit it in the list", 409)
    return done(request, {"room": room.id}, f"room {room.id} added", 201)


@ROUTES.api("/setup/rooms/{room_id}", ADMIN, methods=("POST",))
async def edit_room(request: Request) -> Response:
    room = parse(RoomForm, {**await body(request), "id": request.path_params["room_id"]})
    async with services_of(request).conn() as conn:
        if not await q.save_room(conn, room.id, room.name.strip(), room.capacity, create=False):
            raise Problem(f"no room {room.id!r}", 404)
    return done(request, {"room": room.id}, f"room {room.id} saved")


@ROUTES.page("/setup/courses", ADMIN)
async def courses_page(request: Request) -> Response:
    """Courses: the list with their attendance policy, a new course, a course's name and policy."""
    async with services_of(request).conn() as conn:
        return render(request, "setup_courses.html", {"courses": await q.courses(conn)})


@ROUTES.api("/setup/courses", ADMIN, methods=("POST",))
async def create_course(request: Request) -> Response:
    course = parse(CourseForm, await body(request))
    async with services_of(request).conn() as conn:
        if not await q.save_course(conn, course.id, _values(course), create=True):
            raise Problem(f"course {course.id!r} exists already: edit it in the list", 409)
    return done(request, {"course": course.id}, f"course {course.id} added", 201)


@ROUTES.api("/setup/courses/{course_id}", ADMIN, methods=("POST",))
async def edit_course(request: Request) -> Response:
    course = parse(CourseForm, {**await body(request), "id": request.path_params["course_id"]})
    async with services_of(request).conn() as conn:
        if not await q.save_course(conn, course.id, _values(course), create=False):
            raise Problem(f"no course {course.id!r}", 404)
    return done(request, {"course": course.id}, f"course {course.id} saved")


def _values(course: CourseForm) -> dict:
    return {**course.model_dump(include=set(q.COURSE_FIELDS)), "name": course.name.strip()}
