"""Request helpers every route module shares: who is asking (user, scope), the responses (a page, an
error, a state change done), reading the request (its body, dates and filters in the query), the
scope checks on sessions and students, and the live rooms and stream slots of the live pages."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from dashboard import auth, queries
from dashboard.auth import Scope, User
from dashboard.services import Problem, services_of
from infra.foundation.dates import FIRST_DATE, LAST_DATE

HERE = Path(__file__).resolve().parent
ALL = ("admin", "faculty", "student")
STAFF = ("admin", "faculty")
ADMIN = ("admin",)

templates = Jinja2Templates(directory=str(HERE / "templates"))


# ------------------------------------------------------------------------------------------ who asks

def current_user(request: Request) -> User:
    return request.state.user


def current_scope(request: Request) -> Scope:
    return request.state.scope


def home_of(user: User) -> str:
    if user.role == "student":
        return f"/attendance/students/{quote(user.person_id or '')}"
    return "/live"


def client_of(request: Request) -> str:
    peer = request.client.host if request.client else None
    return auth.client_address(peer, request.headers.get("x-forwarded-for"),
                               services_of(request).config.dashboard.trusted_proxies)


# ------------------------------------------------------------------------------------------ responses

def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, message: str, status: int) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", {"message": message, "status": status}, status=status)


def render(request: Request, name: str, context: dict | None = None, status: int = 200) -> HTMLResponse:
    user: User | None = getattr(request.state, "user", None)
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    ctx = {"user": user, "csrf_token": csrf_token(request), "site": services_of(request).config.site.name,
           "flash": flash, "path": request.url.path, **(context or {})}
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = auth.new_csrf_token()
    return token


def safe_next(value: str | None, default: str) -> str:
    """Only a path on this site (no scheme, no //host): an open redirect otherwise."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def done(request: Request, payload: dict, message: str, status: int = 200) -> Response:
    """A state change answered: JSON for the API, or back to the form's page with a message."""
    form = getattr(request.state, "form", None)
    if form is not None and form.get("next"):
        request.session["flash"] = message
        return RedirectResponse(safe_next(form.get("next"), "/"), status_code=303)
    return JSONResponse({**payload, "message": message}, status_code=status)


# ------------------------------------------------------------------------------------------ reading the request

async def body(request: Request) -> dict:
    """The request's fields: the form (read by the guard), or a JSON object."""
    if request.state.form is not None:
        return {k: v for k, v in request.state.form.items()}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise Problem("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise Problem("the body must be a JSON object")
        return data
    return {}


def query_date(value: str | None, what: str) -> dt.date | None:
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise Problem(f"{what} {value[:40]!r} is not a date: use YYYY-MM-DD") from None
    if not FIRST_DATE <= day <= LAST_DATE:
        raise Problem(f"{what} {value} is out of range: {FIRST_DATE} to {LAST_DATE}")
    return day


def session_filters(request: Request) -> dict:
    q = request.query_params
    state = q.get("state") or None
    if state and state not in ("scheduled", "open", "closed", "cancelled"):
        raise Problem(f"state {state!r} is not one of scheduled, open, closed, cancelled")
    return {"course": q.get("course") or None, "state": state, "room": q.get("room") or None,
            "date_from": query_date(q.get("from"), "from"), "date_to": query_date(q.get("to"), "to")}


# ------------------------------------------------------------------------------------------ scope checks

async def session_in_scope(request: Request, conn, session_id: int) -> dict:
    item = await queries.session(conn, session_id)
    if item is None or not current_scope(request).course(item["course_id"]):
        raise Problem(f"no session {session_id}" if item is None else
                      f"session {session_id} is not one of your courses", 404 if item is None else 403)
    return item


async def student_allowed(request: Request, conn, person_id: str) -> None:
    user, scope = current_user(request), current_scope(request)
    if user.role == "student" and person_id != user.person_id:
        raise Problem("a student may see only their own attendance", 403)
    if user.role == "faculty" and not await queries.student_in_courses(conn, person_id, scope.courses or frozenset()):
        raise Problem(f"{person_id!r} is not a student of your courses", 403)


# ------------------------------------------------------------------------------------------ live data
# Faculty see live data (video, presence, recognitions) only of the rooms where one of their courses has a
# session at the time (a room is shared with other courses at other hours); admins see every room.

async def live_rooms(request: Request) -> dict[str, tuple[dt.datetime, dt.datetime]] | None:
    return await services_of(request).live_rooms(current_user(request), current_scope(request))


def since_of(live: dict[str, tuple[dt.datetime, dt.datetime]] | None) -> dict[str, str] | None:
    """room -> the window's start as the events' frame_time text (ISO UTC, ms, Z): comparable as text."""
    if live is None:
        return None
    return {room: since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            for room, (since, _) in live.items()}


@contextlib.contextmanager
def stream_slot(request: Request):
    """One of the user's ``dashboard.max_streams_per_user`` live streams, or a 429."""
    services, username = services_of(request), current_user(request).username
    if not services.streams.acquire(username):
        raise Problem(f"too many live streams open for {username} (at most "
                      f"{services.streams.per_user}): close some video or live-feed tabs", 429)
    try:
        yield lambda: services.streams.release(username)
    except BaseException:
        services.streams.release(username)
        raise


