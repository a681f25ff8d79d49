"""Sessions: the list with filters, one session's attendance, opening and closing a session by hand,
resolving an unconfirmed record (faculty: their courses)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from consumers import api as attendance_api
from dashboard import auth, queries
from dashboard.forms import Resolution, SessionOpening, parse
from dashboard.campus_state import Campus
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import STAFF, body, current_scope, current_user, done, render, session_filters, session_in_scope

ROUTES = RouteTable()


@ROUTES.page("/attendance", STAFF)
async def attendance_page(request: Request) -> Response:
    """Sessions with filters; open a session by hand."""
    services, scope = services_of(request), current_scope(request)
    filters = session_filters(request)
    async with services.conn() as conn:
        rows = await queries.sessions(conn, courses=scope.courses, timezone=services.config.site.timezone, **filters)
    return render(request, "attendance.html", {
        "sessions": rows, "filters": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in filters.items()},
        "courses": await services.courses_in(scope), "rooms": await services.rooms_in(scope)})


@ROUTES.api("/api/sessions", STAFF)
async def sessions_api(request: Request) -> Response:
    """Sessions this user may see: ?course= &state= &room= &from=YYYY-MM-DD &to=YYYY-MM-DD."""
    services = services_of(request)
    async with services.conn() as conn:
        rows = await queries.sessions(conn, courses=current_scope(request).courses,
                                      timezone=services.config.site.timezone, **session_filters(request))
    return JSONResponse({"sessions": rows})


@ROUTES.page("/attendance/sessions/{session_id:int}", STAFF)
async def session_page(request: Request) -> Response:
    """One session's attendance."""
    async with services_of(request).conn() as conn:
        item = await session_in_scope(request, conn, request.path_params["session_id"])
    return render(request, "session.html", {"s": item})


@ROUTES.api("/api/sessions/{session_id:int}", STAFF)
async def session_api(request: Request) -> Response:
    """One session and its attendance (roster students without a record included)."""
    async with services_of(request).conn() as conn:
        return JSONResponse(await session_in_scope(request, conn, request.path_params["session_id"]))


@ROUTES.api("/api/sessions", STAFF, methods=("POST",))
async def open_session_api(request: Request) -> Response:
    """Open a session by hand: {course, room, minutes?}: a one-off from now for minutes, or (no minutes) the
    timetable session of the course running in the room now; faculty for their courses."""
    services, user = services_of(request), current_user(request)
    opening = parse(SessionOpening, await body(request))
    course_id, room_id, minutes = opening.course, opening.room, opening.minutes
    campus = await services.campus()
    _check_course_and_room(campus, current_scope(request), course_id, room_id)
    async with services.conn() as conn:
        if minutes is not None:
            await _no_other_class(campus, conn, course_id, room_id, minutes)
        kwargs = {"course_id": course_id, "room_id": room_id, "actor": user.username}
        if minutes is not None:  # a one-off session from now; without: the timetable session running now
            kwargs["minutes"] = minutes
        result = await attendance_api.open_session(conn, **kwargs)
    session_id = result.get("id") or result.get("session_id") if isinstance(result, dict) else result
    return done(request, {"session_id": session_id}, f"session {session_id} of {course_id} opened in {room_id}", 201)


def _check_course_and_room(campus: Campus, scope: auth.Scope, course_id: str, room_id: str) -> None:
    """Both known, the course one of the user's, and (faculty) the room one of the course's timetable."""
    if course_id not in {c.id for c in campus.courses}:
        raise Problem(f"no course {course_id!r}")
    if not scope.course(course_id):
        raise Problem(f"course {course_id!r} is not one of your courses", 403)
    if room_id not in {r.id for r in campus.rooms}:
        raise Problem(f"no room {room_id!r}")
    if scope.courses is not None and room_id not in auth.course_rooms(campus, course_id):
        raise Problem(f"{course_id} is not timetabled in {room_id}: open its sessions in "
                      f"{', '.join(sorted(auth.course_rooms(campus, course_id))) or 'its rooms'}", 403)


async def _no_other_class(campus: Campus, conn, course_id: str, room_id: str, minutes: int) -> None:
    """A session opened by hand takes the room's sightings over any timetable session there (the writer
    prefers it), so a one-off session may not overlap another course's session in the room, from its
    early-arrival window to its end: that class would be marked absent."""
    course = next(c for c in campus.courses if c.id == course_id)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=course.policy.early_arrival_min), now + dt.timedelta(minutes=minutes)
    clashes = [(c, s) for c, s, _ in auth.timetable_intervals(campus, room_id, start, end) if c != course_id]
    clashes += [(r["course_id"], dt.datetime.fromisoformat(r["starts_at"]))
                for r in await queries.other_sessions_in_room(conn, room_id, course_id, start, end)]
    if clashes:
        other, at = min(clashes, key=lambda item: item[1])
        local = at.astimezone(ZoneInfo(campus.site.timezone)).strftime("%Y-%m-%d %H:%M")
        raise Problem(f"{room_id} has a session of {other} at {local} within this one: a session opened by hand "
                      "would take its sightings; open the course's own timetable session, or a shorter one", 409)


@ROUTES.api("/api/sessions/{session_id:int}/close", STAFF, methods=("POST",))
async def close_session_api(request: Request) -> Response:
    """Close a session by hand (faculty: their courses); attendance is final from then on."""
    services, user = services_of(request), current_user(request)
    session_id = request.path_params["session_id"]
    async with services.conn() as conn:
        item = await session_in_scope(request, conn, session_id)
        if item["state"] == "closed":
            raise Problem(f"session {session_id} is closed already", 409)
        try:
            await attendance_api.close_session(conn, session_id, actor=user.username)
        except (ValueError, LookupError) as exc:
            raise Problem(str(exc), 409) from None
    return done(request, {"session_id": session_id, "state": "closed"}, f"session {session_id} closed")


@ROUTES.api("/api/sessions/{session_id:int}/attendance/{person_id}/resolve", STAFF, methods=("POST",))
async def resolve_attendance_api(request: Request) -> Response:
    """Resolve an unconfirmed record (recognised at the door, too little presence in the room) of a closed
    session: {status: present | late | absent}; faculty for their courses."""
    services, user = services_of(request), current_user(request)
    session_id, person_id = request.path_params["session_id"], request.path_params["person_id"]
    status = parse(Resolution, await body(request)).status
    async with services.conn() as conn:
        await session_in_scope(request, conn, session_id)
        # a status it cannot take, or a record that is not unconfirmed: a RollcallError, a 400
        await attendance_api.resolve_unconfirmed(conn, session_id, person_id, status, actor=user.username)
    return done(request, {"session_id": session_id, "person_id": person_id, "status": status},
                f"{person_id}: {status} (resolved by {user.username})")
