"""Attendance exports (CSV or XLSX) of a session, a course, a student: each writes its audit_log row,
naming the user."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from consumers import api as attendance_api
from dashboard.guard import RouteTable
from dashboard.limits import only_courses
from dashboard.routes.records import course_record, student_record
from dashboard.services import Problem, services_of
from dashboard.web import ALL, STAFF, current_scope, current_user, query_date, session_in_scope

ROUTES = RouteTable()
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


async def _export(request: Request, export, what: str, *args) -> Response:
    fmt = request.query_params.get("format", "csv")
    if fmt not in EXPORT_TYPES:
        raise Problem(f"format {fmt!r} is not one of csv, xlsx")
    services = services_of(request)
    async with services.conn() as conn:  # the export writes its audit_log row, naming the user
        data = await export(conn, *args, fmt, tz=services.config.site.timezone, actor=current_user(request).username)
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", f"attendance-{what}.{fmt}")
    return Response(data, media_type=EXPORT_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _date_range(request: Request) -> tuple[dt.date, dt.date]:
    """?from= &to= for an export; default: the last 365 days up to today (the site's time zone)."""
    q = request.query_params
    today = dt.datetime.now(ZoneInfo(services_of(request).config.site.timezone)).date()
    date_to = query_date(q.get("to"), "to") or today
    date_from = query_date(q.get("from"), "from") or date_to - dt.timedelta(days=365)
    if date_from > date_to:
        raise Problem("from is after to")
    return date_from, date_to


@ROUTES.api("/api/sessions/{session_id:int}/export", STAFF)
async def export_session(request: Request) -> Response:
    """One session's attendance as ?format=csv or xlsx."""
    session_id = request.path_params["session_id"]
    async with services_of(request).conn() as conn:
        await session_in_scope(request, conn, session_id)
    return await _export(request, attendance_api.export_session, f"session-{session_id}", session_id)


@ROUTES.api("/api/courses/{course_id}/export", STAFF)
async def export_course(request: Request) -> Response:
    """A course's attendance (?from= &to= &format=csv|xlsx)."""
    await course_record(request)
    return await _export(request, attendance_api.export_course, f"course-{request.path_params['course_id']}",
                         request.path_params["course_id"], *_date_range(request))


@ROUTES.api("/api/students/{person_id}/export", ALL)
async def export_student(request: Request) -> Response:
    """A student's attendance as ?format=csv or xlsx (?from= &to=); faculty: their courses' sessions only."""
    await student_record(request)
    response = await _export(request, attendance_api.export_student, f"student-{request.path_params['person_id']}",
                             request.path_params["person_id"], *_date_range(request))
    courses = current_scope(request).courses if current_user(request).role == "faculty" else None
    if courses is not None:  # the export covers every course of the student: keep the rows of theirs
        response.body = only_courses(response.body, request.query_params.get("format", "csv"), courses)
        response.headers["content-length"] = str(len(response.body))
    return response
