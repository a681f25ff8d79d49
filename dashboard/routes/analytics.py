"""Analytics: people per room over time (from occupancy events kept in memory) and attendance rates."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import queries
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import STAFF, current_scope, render

ROUTES = RouteTable()


@ROUTES.page("/analytics", STAFF)
async def analytics_page(request: Request) -> Response:
    """Analytics: people per room over time, rolling average, known vs unknown; attendance rates."""
    services = services_of(request)
    return render(request, "analytics.html", {"rooms": await services.rooms_in(current_scope(request))})


@ROUTES.api("/api/occupancy/{room_id}", STAFF)
async def occupancy(request: Request) -> Response:
    """People count history of a room (from occupancy events, kept in memory): t, people, people_avg, known, unknown."""
    room_id = request.path_params["room_id"]
    services = services_of(request)
    if room_id not in {r.id for r in (await services.campus()).rooms}:
        raise Problem(f"no room {room_id!r}", 404)
    if not current_scope(request).room(room_id):
        raise Problem(f"room {room_id!r} is not one of your rooms", 403)
    return JSONResponse({"room_id": room_id,
                         "points": services.hub.occupancy_history(room_id, request.query_params.get("since"))})


@ROUTES.api("/api/analytics/attendance", STAFF)
async def attendance_rates(request: Request) -> Response:
    """Attendance rate per session (time series) and per course per week."""
    services = services_of(request)
    async with services.conn() as conn:
        data = await queries.attendance_rates(conn, courses=current_scope(request).courses,
                                              timezone=services.config.site.timezone)
    return JSONResponse(data)
