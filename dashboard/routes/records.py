"""Attendance records: a course's sessions and per-student rates, a student's record (students: their
own only; faculty: of their courses)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import queries
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ALL, STAFF, current_scope, current_user, query_date, render, student_allowed

ROUTES = RouteTable()


async def course_record(request: Request) -> dict:
    """The course of the path (403 if not the user's, 404 if none) with its sessions (?from= &to=)."""
    services = services_of(request)
    course_id = request.path_params["course_id"]
    if not current_scope(request).course(course_id):
        raise Problem(f"course {course_id!r} is not one of your courses", 403)
    q = request.query_params
    async with services.conn() as conn:
        item = await queries.course_summary(conn, course_id, date_from=query_date(q.get("from"), "from"),
                                            date_to=query_date(q.get("to"), "to"),
                                            timezone=services.config.site.timezone)
    if item is None:
        raise Problem(f"no course {course_id!r}", 404)
    return item


async def student_record(request: Request) -> dict:
    """The student of the path (403 if the user may not see them, 404 if none), ?course= &from= &to=."""
    services = services_of(request)
    person_id = request.path_params["person_id"]
    q = request.query_params
    faculty = current_user(request).role == "faculty"
    async with services.conn() as conn:
        await student_allowed(request, conn, person_id)
        item = await queries.student_record(
            conn, person_id, courses=current_scope(request).courses if faculty else None,
            course=q.get("course") or None, date_from=query_date(q.get("from"), "from"),
            date_to=query_date(q.get("to"), "to"), timezone=services.config.site.timezone)
    if item is None:
        raise Problem(f"no person {person_id!r}", 404)
    return item


@ROUTES.page("/attendance/courses/{course_id}", STAFF)
async def course_page(request: Request) -> Response:
    """A course: its sessions and each student's attendance rate."""
    item = await course_record(request)
    return render(request, "course.html", {"c": item, "filters": request.query_params})


@ROUTES.api("/api/courses/{course_id}", STAFF)
async def course_api(request: Request) -> Response:
    """A course's sessions and per-student rates (?from= &to=)."""
    return JSONResponse(await course_record(request))


@ROUTES.page("/attendance/students/{person_id}", ALL)
async def student_page(request: Request) -> Response:
    """A student's attendance (students: their own only)."""
    return render(request, "student.html", {"r": await student_record(request), "filters": request.query_params})


@ROUTES.api("/api/students/{person_id}", ALL)
async def student_api(request: Request) -> Response:
    """A student's attendance record (?course= &from= &to=); students: their own only."""
    return JSONResponse(await student_record(request))
