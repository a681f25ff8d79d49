"""The Starlette application: pages, the JSON API, auth, CSRF, and the live services behind them.

Every route is declared through :func:`page` / :func:`api` with the roles that may use it; the guard
they wrap it in refuses malformed path and query values (4xx), an anonymous request (pages: 303 to
/login, API: 401 JSON), a role that may not (403), and an unsafe method (POST, PUT, PATCH, DELETE)
without the session's CSRF token (403), all before the request's body is read; :class:`BodyLimit`
counts the body as it streams in (``dashboard.max_body_bytes``, ``max_upload_bytes`` for multipart).
Only ``/login`` and ``/static`` are public. Data-level checks (a faculty member's courses, a student's
own record, live data only of the rooms where they teach at the time) are in the handlers, through the
user's :class:`~dashboard.auth.Scope` and :func:`live_rooms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from consumers import api as attendance_api
from dashboard import auth, queries
from dashboard.auth import Scope, User
from dashboard.limits import BodyLimit, BodyTooLarge, check_image, only_courses
from dashboard.live import StreamLimits, visible
from infra.foundation.errors import RollcallError
from processor.api import PERSON_ID, enroll_photos
from infra.foundation.db import describe_unreachable
from dashboard.live import FEED_TYPES
from dashboard.health import consumer_lag
from dashboard.openapi import document
from dashboard.health import ProcessorMetrics
from dashboard.live import LiveHub
from dashboard.video import VideoHub
from infra.foundation.endpoints import resolve

log = logging.getLogger("rollcall.dashboard")

HERE = Path(__file__).resolve().parent
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ALL = ("admin", "faculty", "student")
STAFF = ("admin", "faculty")
ADMIN = ("admin",)
PUBLIC_PATHS = ("/login", "/static")
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LIVE_CACHE_S = 5.0
MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is no row, not an error
MAX_PARAM_CHARS = 1000
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}

templates = Jinja2Templates(directory=str(HERE / "templates"))


class Problem(Exception):
    """A request the dashboard refuses, with the one line to show and its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# ------------------------------------------------------------------------------------------ services

@dataclass
class Services:
    config: Any
    database_url: str
    kafka_bootstrap_servers: str
    camera_urls: dict[str, str]
    hub: Any = None
    video: Any = None
    metrics: Any = None
    limiter: auth.LoginLimiter | None = None
    streams: StreamLimits | None = None
    pool: Any = None
    pool_error: str | None = None
    _live: dict[str, tuple[float, dict]] = field(default_factory=dict)
    _names: tuple[float, dict[str, str]] = (0.0, {})
    _pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get_pool(self):
        if self.pool is not None:
            return self.pool
        async with self._pool_lock:
            if self.pool is None:
                try:
                    self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8, timeout=5,
                                                          command_timeout=30)
                    self.pool_error = None
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:

                    self.pool_error = str(describe_unreachable(self.database_url, exc))
                    raise Problem(f"database unavailable: {self.pool_error}", 503) from None
        return self.pool

    @contextlib.asynccontextmanager
    async def conn(self):
        pool = await self.get_pool()
        try:
            async with pool.acquire(timeout=10) as conn:
                yield conn
        except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.CannotConnectNowError,
                asyncio.TimeoutError) as exc:
            raise Problem(f"database unavailable: {type(exc).__name__}: {exc}", 503) from None
        except asyncpg.exceptions.UndefinedTableError as exc:
            raise Problem(f"the database is not migrated ({exc}): run `rollcall db migrate`", 503) from None

    async def user(self, session_id: str | None) -> User | None:
        """The account of a live server-side session (looked up on every request: revocation is immediate)."""
        if not session_id:
            return None
        async with self.conn() as conn:
            return await auth.session_user(conn, session_id)

    async def live_rooms(self, user: User, scope: Scope, fresh: bool = False
                         ) -> dict[str, tuple[dt.datetime, dt.datetime]] | None:
        """None (admin: every room), else room -> (since, until): the rooms where one of the user's courses
        has a session now (in the database, or by the timetable), from its window's start to its end."""
        if scope.courses is None:
            return None
        cached = self._live.get(user.username)
        if not fresh and cached is not None and time.monotonic() - cached[0] < LIVE_CACHE_S:
            return cached[1]
        rooms = auth.timetable_windows(self.config, scope.courses, dt.datetime.now(dt.timezone.utc))
        if scope.courses:
            async with self.conn() as conn:
                for room, (since, until) in (await queries.live_sessions(conn, scope.courses)).items():
                    old = rooms.get(room, (since, until))
                    rooms[room] = (min(old[0], since), max(old[1], until))
        self._live[user.username] = (time.monotonic(), rooms)
        return rooms

    async def names(self) -> dict[str, str]:
        if time.monotonic() - self._names[0] > 30:
            async with self.conn() as conn:
                self._names = (time.monotonic(), await queries.display_names(conn))
        return self._names[1]

    def forget_names(self) -> None:
        self._names = (0.0, {})

    def rooms_in(self, scope: Scope) -> list[str]:
        return [r.id for r in self.config.rooms if scope.room(r.id)]

    def cameras_in(self, scope: Scope) -> list:
        return [c for c in self.config.cameras if c.enabled and scope.camera(c.id)]


def services_of(request: Request) -> Services:
    return request.app.state.services


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


# ------------------------------------------------------------------------------------------ the guard

Handler = Callable[[Request], Awaitable[Response]]


def guard(endpoint: Handler, roles: tuple[str, ...], *, public: bool = False) -> Handler:
    async def guarded(request: Request) -> Response:
        request.state.form = None
        try:
            if not public:
                user = await services_of(request).user(request.session.get("sid"))
                if user is None:
                    if wants_json(request):
                        return JSONResponse({"error": "not logged in: POST /login first"}, status_code=401)
                    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
                request.state.user = user
                request.state.scope = auth.scope_of(user, services_of(request).config)
                if user.role not in roles:
                    raise Problem(f"a {user.role} account may not open {request.url.path}", 403)
            _check_params(request)
            if request.method not in SAFE_METHODS:
                await _check_csrf(request)
            return await endpoint(request)
        except Problem as exc:
            return error_response(request, exc.message, exc.status)
        except RollcallError as exc:
            return error_response(request, str(exc), 400)
        except BodyTooLarge as exc:
            return error_response(request, str(exc), 413)
        except asyncpg.exceptions.DataError as exc:  # a value PostgreSQL cannot take (e.g. a NUL character)
            return error_response(request, f"a value in the request is not valid: {exc}".splitlines()[0], 400)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    guarded.roles = roles  # type: ignore[attr-defined]
    guarded.public = public  # type: ignore[attr-defined]
    return guarded


def _check_params(request: Request) -> None:
    """Path and query values a handler or PostgreSQL would choke on: a clear 4xx before anything runs."""
    for name, value in request.path_params.items():
        if isinstance(value, int) and not 0 <= value <= MAX_ID:
            raise Problem(f"no {name.removesuffix('_id')} {value}", 404)
        if isinstance(value, str) and (len(value) > 200 or not value.isprintable()):
            raise Problem(f"{name} is not valid: at most 200 printable characters", 400)
    for name, value in request.query_params.multi_items():
        if len(name) + len(value) > MAX_PARAM_CHARS or "\x00" in name or "\x00" in value:
            raise Problem(f"query parameter {name[:40]!r} is not valid (too long, or a NUL character)", 400)


async def _check_csrf(request: Request) -> None:
    """The session's CSRF token from the X-CSRF-Token header, or else a form's csrf_token field (the form
    is read only then, and only for a logged-in user or the login form, within the body limits)."""
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        request.state.form = await _form_if_any(request)
        sent = (request.state.form or {}).get(CSRF_FIELD)
    if not auth.same_token(sent, request.session.get("csrf")):
        raise Problem("missing or wrong CSRF token: reload the page and try again", 403)
    if request.state.form is None:
        request.state.form = await _form_if_any(request)


async def _form_if_any(request: Request):
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded") or kind.startswith("multipart/form-data"):
        d = services_of(request).config.dashboard
        try:
            return await request.form(max_files=d.max_upload_files, max_fields=100, max_part_size=d.max_body_bytes)
        except BodyTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors: a bad request, said in one line
            raise Problem(f"the form could not be read: {exc}", 400) from None
    return None


async def body(request: Request) -> dict:
    """The request's fields: the form, or a JSON object."""
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


ROUTES: list[Route] = []


def page(path: str, roles: tuple[str, ...], methods=("GET",), name: str | None = None, public: bool = False):
    def add(endpoint: Handler) -> Handler:
        ROUTES.append(Route(path, guard(endpoint, roles, public=public), methods=list(methods), name=name))
        return endpoint
    return add


api = page  # the same guard; /api/ paths answer in JSON


# ------------------------------------------------------------------------------------------ helpers

def _date(value: str | None, what: str) -> dt.date | None:
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise Problem(f"{what} {value[:40]!r} is not a date: use YYYY-MM-DD") from None
    if not FIRST_DATE <= day <= LAST_DATE:
        raise Problem(f"{what} {value} is out of range: {FIRST_DATE} to {LAST_DATE}")
    return day


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise Problem(f"{what} {str(value)[:40]!r} is not a number") from None


def _filters(request: Request) -> dict:
    q = request.query_params
    state = q.get("state") or None
    if state and state not in ("scheduled", "open", "closed", "cancelled"):
        raise Problem(f"state {state!r} is not one of scheduled, open, closed, cancelled")
    return {"course": q.get("course") or None, "state": state, "room": q.get("room") or None,
            "date_from": _date(q.get("from"), "from"), "date_to": _date(q.get("to"), "to")}


def _scope(request: Request) -> Scope:
    return request.state.scope


def _user(request: Request) -> User:
    return request.state.user


async def _session_in_scope(request: Request, conn, session_id: int) -> dict:
    item = await queries.session(conn, session_id)
    if item is None or not _scope(request).course(item["course_id"]):
        raise Problem(f"no session {session_id}" if item is None else
                      f"session {session_id} is not one of your courses", 404 if item is None else 403)
    return item


async def _student_allowed(request: Request, conn, person_id: str) -> None:
    user, scope = _user(request), _scope(request)
    if user.role == "student" and person_id != user.person_id:
        raise Problem("a student may see only their own attendance", 403)
    if user.role == "faculty" and not await queries.student_in_courses(conn, person_id, scope.courses or frozenset()):
        raise Problem(f"{person_id!r} is not a student of your courses", 403)


def _home(user: User) -> str:
    if user.role == "student":
        return f"/attendance/students/{quote(user.person_id or '')}"
    return "/live"


# ------------------------------------------------------------------------------------------ auth pages

@page("/login", (), methods=("GET",), public=True, name="login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return render(request, "login.html", {"next": safe_next(request.query_params.get("next"), "")})


@page("/login", (), methods=("POST",), public=True)
async def login(request: Request) -> Response:
    """Log in (form or JSON {username, password}); rate-limited per account and per client address."""
    services = services_of(request)
    fields = await body(request)
    username = str(fields.get("username") or "").strip()[:100]
    password = str(fields.get("password") or "")[:1000]
    client = _client(request)
    as_json = request.state.form is None
    wait, attempt = services.limiter.attempt(username, client)
    if wait:
        log.warning("login refused (rate limit) for %r from %s", username, client)
        message = f"too many failed logins: try again in {wait} s"
        if as_json:
            return JSONResponse({"error": message}, status_code=429, headers={"Retry-After": str(wait)})
        return render(request, "login.html", {"error": message, "next": fields.get("next", "")}, status=429)
    stored = None
    if auth.USERNAME.match(username):
        async with services.conn() as conn:
            stored = await auth.password_hash_of(conn, username)
    ok = await asyncio.to_thread(auth.verify_password, stored, password)
    if not ok:
        await _failed_login(services, username, client)
        message = "wrong username or password"
        if as_json:
            return JSONResponse({"error": message}, status_code=400)
        return render(request, "login.html", {"error": message, "next": fields.get("next", "")}, status=400)
    services.limiter.succeeded(username, client, attempt)
    async with services.conn() as conn:
        await conn.execute("UPDATE dashboard_user SET last_login_at = now() WHERE username = $1", username)
        user = await auth.get_user(conn, username)
        await attendance_api.audit_login(conn, username, ok=True, client=client)
        await auth.end_session(conn, request.session.get("sid"))
        session_id = await auth.start_session(conn, username, services.config.dashboard.session_max_age_s, client)
    request.session.clear()
    request.session.update({"sid": session_id, "csrf": auth.new_csrf_token(), "at": int(time.time())})
    if as_json:
        return JSONResponse({"username": user.username, "role": user.role, "person_id": user.person_id,
                             "csrf_token": request.session["csrf"]})
    target = safe_next(fields.get("next"), _home(user))
    if user.role == "student" and not target.startswith(_home(user)):
        target = _home(user)  # the page asked for is not theirs to see: their own record instead
    return RedirectResponse(target, status_code=303)


def _client(request: Request) -> str:
    peer = request.client.host if request.client else None
    return auth.client_address(peer, request.headers.get("x-forwarded-for"),
                               services_of(request).config.dashboard.trusted_proxies)


async def _failed_login(services: Services, username: str, client: str, reason: str = "wrong password") -> None:
    """Said in the log and kept in the audit log (who tried which account from where)."""
    log.warning("failed login for %r from %s (%s)", username[:64], client, reason)
    async with services.conn() as conn:
        await attendance_api.audit_login(conn, username, ok=False, client=client, reason=reason)


@page("/logout", ALL, methods=("POST",))
async def logout(request: Request) -> Response:
    """Log out: the session ends on the server too (a copy of the cookie is no longer let in)."""
    async with services_of(request).conn() as conn:
        await auth.end_session(conn, request.session.get("sid"))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@api("/api/me/password", ALL, methods=("POST",))
async def change_password(request: Request) -> Response:
    """Change your password: {current_password, new_password}; ends your other sessions."""
    services, user = services_of(request), _user(request)
    fields = await body(request)
    current, new = str(fields.get("current_password") or ""), str(fields.get("new_password") or "")
    client = _client(request)
    wait, attempt = services.limiter.attempt(user.username, client)
    if wait:
        raise Problem(f"too many failed attempts: try again in {wait} s", 429)
    async with services.conn() as conn:
        stored = await auth.password_hash_of(conn, user.username)
    if not await asyncio.to_thread(auth.verify_password, stored, current[:1000]):
        await _failed_login(services, user.username, client, "wrong current password on a password change")
        raise Problem("the current password is wrong", 400)
    services.limiter.succeeded(user.username, client, attempt)
    async with services.conn() as conn:
        ended = await auth.change_password(conn, user.username, new[:1000], keep=request.session.get("sid"))
    return done(request, {"sessions_ended": ended}, f"password changed; {ended} other session(s) ended")


@page("/", ALL)
async def home(request: Request) -> Response:
    """The user's start page."""
    return RedirectResponse(_home(_user(request)), status_code=303)


@api("/api/me", ALL)
async def me(request: Request) -> Response:
    """The logged-in account, its role, what it may see, and its CSRF token."""
    user, scope = _user(request), _scope(request)
    return JSONResponse({"username": user.username, "role": user.role, "person_id": user.person_id,
                         "csrf_token": csrf_token(request),
                         "courses": sorted(scope.courses) if scope.courses is not None else None,
                         "rooms": sorted(scope.rooms) if scope.rooms is not None else None})


# ------------------------------------------------------------------------------------------ live
# Faculty see live data (video, presence, recognitions) only of the rooms where one of their courses has a
# session at the time (a room is shared with other courses at other hours); admins see every room.

async def _live_rooms(request: Request) -> dict[str, tuple[dt.datetime, dt.datetime]] | None:
    return await services_of(request).live_rooms(_user(request), _scope(request))


def _since(live: dict[str, tuple[dt.datetime, dt.datetime]] | None) -> dict[str, str] | None:
    """room -> the window's start as the events' frame_time text (ISO UTC, ms, Z): comparable as text."""
    if live is None:
        return None
    return {room: since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            for room, (since, _) in live.items()}


def _cameras_json(services: Services, scope: Scope, live: dict | None) -> list[dict]:
    out = []
    for camera in services.config.cameras:
        watchable = live is None or camera.room in live
        if not camera.enabled or not (scope.camera(camera.id) or watchable):
            continue
        feed = services.video.feeds.get(camera.id) if services.video else None
        processor = services.metrics.cameras.get(camera.id, {}) if services.metrics else {}
        out.append({"id": camera.id, "name": camera.name, "role": camera.role, "room_id": camera.room,
                    "video": feed is not None, "feed_state": feed.state if feed and feed.source else "idle",
                    "processor_state": processor.get("state"), "live": watchable})
    return out


@page("/live", STAFF)
async def live_page(request: Request) -> Response:
    """Live: camera grid (WebRTC, MJPEG fallback), live event feed, presence board (faculty: the rooms of
    their sessions running now)."""
    services = services_of(request)
    live = await _live_rooms(request)
    cameras = [c for c in _cameras_json(services, _scope(request), live) if c["live"]]
    return render(request, "live.html", {"cameras": cameras,
                                         "rooms": [r for r in services.config.rooms if live is None or r.id in live]})


@api("/api/cameras", STAFF)
async def cameras(request: Request) -> Response:
    """The cameras of this user's rooms, with the video feed's and the processor's state; ``live``: whether
    they may watch it now (faculty: one of their sessions is running in its room)."""
    live = await _live_rooms(request)
    return JSONResponse({"cameras": _cameras_json(services_of(request), _scope(request), live)})


async def _board(request: Request) -> list[dict]:
    services = services_of(request)
    since = _since(await _live_rooms(request))
    rooms = [r.id for r in services.config.rooms if since is None or r.id in since]
    board = services.hub.presence_board(rooms)
    names = await services.names()
    for room in board:
        if since is not None:  # tracks of this session's window only, not the class before
            room["tracks"] = [t for t in room["tracks"] if str(t["last_seen"]) >= since[room["room_id"]]]
            room["people"] = len(room["tracks"])
            room["known"] = sum(t["identity"] == "known" for t in room["tracks"])
        for track in room["tracks"]:
            track["name"] = names.get(track["person_id"]) if track["person_id"] else None
    return board


@api("/api/presence", STAFF)
async def presence(request: Request) -> Response:
    """The presence board: per room, the person tracks in it now (from presence events) and the latest count;
    faculty: the rooms of their sessions running now."""
    return JSONResponse({"rooms": await _board(request), "feed": services_of(request).hub.status()["state"]})


@api("/api/events/recent", STAFF)
async def recent_events(request: Request) -> Response:
    """The latest recognition and presence events (up to 200) this user may see, newest last (faculty: of
    their sessions running now, since each one's window began)."""
    since = _since(await _live_rooms(request))
    return JSONResponse({"events": [e for e in services_of(request).hub.recent if visible(e, since)]})


@contextlib.contextmanager
def _stream_slot(request: Request):
    """One of the user's ``dashboard.max_streams_per_user`` live streams, or a 429."""
    services, username = services_of(request), _user(request).username
    if not services.streams.acquire(username):
        raise Problem(f"too many live streams open for {username} (at most "
                      f"{services.streams.per_user}): close some video or live-feed tabs", 429)
    try:
        yield lambda: services.streams.release(username)
    except BaseException:
        services.streams.release(username)
        raise


@api("/api/events/stream", STAFF)
async def event_stream(request: Request) -> Response:
    """Server-sent events from Kafka as they arrive: recognition, presence, occupancy (``?types=`` to choose);
    faculty: of the rooms of their sessions, as those begin and end."""

    services = services_of(request)
    wanted = [t for t in (request.query_params.get("types") or ",".join(FEED_TYPES)).split(",") if t]
    unknown = [t for t in wanted if t not in FEED_TYPES]
    if unknown:
        raise Problem(f"unknown event type {unknown[0][:40]!r}: choose from {', '.join(FEED_TYPES)}")
    with _stream_slot(request) as release:
        sub = services.hub.subscribe(_since(await _live_rooms(request)), wanted)
        if sub is None:
            raise Problem("too many live clients on this dashboard process", 503)
    return StreamingResponse(_sse(request, sub, release), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})


async def _sse(request: Request, sub, release):
    services = services_of(request)
    try:
        yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'feed': services.hub.state})}\n\n".encode()
        user, scope = _user(request), _scope(request)
        quiet = time.monotonic()  # when something was last sent (a keep-alive after 15 s of nothing)
        refresh_at = quiet + LIVE_CACHE_S
        while True:
            if sub.rooms is not None and time.monotonic() >= refresh_at:
                # their sessions begin and end while they watch
                sub.rooms = _since(await services.live_rooms(user, scope, fresh=True))
                refresh_at = time.monotonic() + LIVE_CACHE_S
            wait = min(refresh_at, quiet + 15) - time.monotonic() if sub.rooms is not None else quiet + 15 - time.monotonic()
            try:
                async with asyncio.timeout(max(0.05, wait)):
                    message = await sub.queue.get()
            except asyncio.TimeoutError:
                if time.monotonic() >= quiet + 15:
                    quiet = time.monotonic()
                    yield b": keep-alive\n\n"
                continue
            quiet = time.monotonic()
            chunk = [message]
            while not sub.queue.empty() and len(chunk) < 100:
                chunk.append(sub.queue.get_nowait())
            yield b"".join(chunk)
    finally:
        services.hub.unsubscribe(sub)
        release()


# ------------------------------------------------------------------------------------------ video

async def _feed(request: Request):
    """The camera's feed and until when (Unix time, None: no end) this user may watch it."""
    services = services_of(request)
    camera_id = request.path_params["camera_id"]
    camera = next((c for c in services.config.cameras if c.id == camera_id), None)
    live = await _live_rooms(request)
    if live is not None and (camera is None or camera.room not in live):
        raise Problem(f"camera {camera_id!r}: none of your sessions is running in its room now", 403)
    feed = services.video.feeds.get(camera_id) if services.video else None
    if feed is None:
        raise Problem(f"no camera {camera_id!r} with video", 404)
    return services, feed, (live[camera.room][1].timestamp() if live is not None else None)


@api("/api/video/{camera_id}/offer", STAFF, methods=("POST",))
async def video_offer(request: Request) -> Response:
    """WebRTC: send the browser's SDP offer ({sdp, type}); the answer carries the annotated video track.
    A connection that does not connect within ``dashboard.video_connect_timeout_s`` is closed."""
    services, feed, until = await _feed(request)
    fields = await body(request)
    if not isinstance(fields.get("sdp"), str) or fields.get("type") != "offer":
        raise Problem("send the browser's offer as JSON {\"sdp\": ..., \"type\": \"offer\"}")
    with _stream_slot(request) as release:
        try:
            answer = await services.video.answer(feed.camera.id, fields["sdp"], "offer", on_close=release,
                                                 until=until)
        except OverflowError as exc:
            raise Problem(str(exc), 503) from None
        except ValueError as exc:
            raise Problem(f"the offer was refused: {exc}") from None
    return JSONResponse(answer)


@api("/api/video/{camera_id}/mjpeg", STAFF)
async def video_mjpeg(request: Request) -> Response:
    """The annotated video as MJPEG (multipart/x-mixed-replace): the fallback where WebRTC cannot connect."""
    services, feed, until = await _feed(request)
    with _stream_slot(request) as release:
        feed.acquire()

    async def stream():
        seq = 0
        try:
            while until is None or time.time() < until:
                seq, frame = await feed.next_frame(seq)
                data = await feed.jpeg(seq, frame)
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                       + b"\r\n\r\n" + data + b"\r\n")
        finally:
            feed.release()
            release()

    return StreamingResponse(stream(), media_type="multipart/x-mixed-replace; boundary=frame",
                             headers={"Cache-Control": "no-cache, no-store"})


@api("/api/video/{camera_id}/snapshot.jpg", STAFF)
async def video_snapshot(request: Request) -> Response:
    """One annotated frame (JPEG), the newest: starts the camera's feed for a few seconds if it is idle."""
    services, feed, _ = await _feed(request)
    feed.acquire()
    try:
        seq, frame = await feed.next_frame(feed.seq if feed.source is not None else 0, timeout=3)
        data = await feed.jpeg(seq, frame)
    finally:
        feed.release()
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------------ analytics

@page("/analytics", STAFF)
async def analytics_page(request: Request) -> Response:
    """Analytics: people per room over time, rolling average, known vs unknown; attendance rates."""
    services = services_of(request)
    return render(request, "analytics.html", {"rooms": services.rooms_in(_scope(request))})


@api("/api/occupancy/{room_id}", STAFF)
async def occupancy(request: Request) -> Response:
    """People count history of a room (from occupancy events, kept in memory): t, people, people_avg, known, unknown."""
    room_id = request.path_params["room_id"]
    services = services_of(request)
    if room_id not in {r.id for r in services.config.rooms}:
        raise Problem(f"no room {room_id!r}", 404)
    if not _scope(request).room(room_id):
        raise Problem(f"room {room_id!r} is not one of your rooms", 403)
    return JSONResponse({"room_id": room_id,
                         "points": services.hub.occupancy_history(room_id, request.query_params.get("since"))})


@api("/api/analytics/attendance", STAFF)
async def attendance_rates(request: Request) -> Response:
    """Attendance rate per session (time series) and per course per week."""
    services = services_of(request)
    async with services.conn() as conn:
        data = await queries.attendance_rates(conn, courses=_scope(request).courses,
                                              timezone=services.config.site.timezone)
    return JSONResponse(data)


# ------------------------------------------------------------------------------------------ attendance

def _courses_in(services: Services, scope: Scope) -> list:
    return [c for c in services.config.courses if scope.course(c.id)]


@page("/attendance", STAFF)
async def attendance_page(request: Request) -> Response:
    """Sessions with filters; open a session by hand."""
    services, scope = services_of(request), _scope(request)
    filters = _filters(request)
    async with services.conn() as conn:
        rows = await queries.sessions(conn, courses=scope.courses, timezone=services.config.site.timezone, **filters)
    return render(request, "attendance.html", {
        "sessions": rows, "filters": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in filters.items()},
        "courses": _courses_in(services, scope), "rooms": services.rooms_in(scope)})


@api("/api/sessions", STAFF)
async def sessions_api(request: Request) -> Response:
    """Sessions this user may see: ?course= &state= &room= &from=YYYY-MM-DD &to=YYYY-MM-DD."""
    services = services_of(request)
    async with services.conn() as conn:
        rows = await queries.sessions(conn, courses=_scope(request).courses, timezone=services.config.site.timezone,
                                      **_filters(request))
    return JSONResponse({"sessions": rows})


@page("/attendance/sessions/{session_id:int}", STAFF)
async def session_page(request: Request) -> Response:
    """One session's attendance."""
    async with services_of(request).conn() as conn:
        item = await _session_in_scope(request, conn, request.path_params["session_id"])
    return render(request, "session.html", {"s": item})


@api("/api/sessions/{session_id:int}", STAFF)
async def session_api(request: Request) -> Response:
    """One session and its attendance (roster students without a record included)."""
    async with services_of(request).conn() as conn:
        return JSONResponse(await _session_in_scope(request, conn, request.path_params["session_id"]))


@api("/api/sessions", STAFF, methods=("POST",))
async def open_session_api(request: Request) -> Response:
    """Open a session by hand: {course, room, minutes?}: a one-off from now for minutes, or (no minutes) the
    timetable session of the course running in the room now; faculty for their courses."""
    services, scope, user = services_of(request), _scope(request), _user(request)
    fields = await body(request)
    course_id, room_id = str(fields.get("course") or ""), str(fields.get("room") or "")
    if course_id not in {c.id for c in services.config.courses}:
        raise Problem(f"no course {course_id!r}")
    if not scope.course(course_id):
        raise Problem(f"course {course_id!r} is not one of your courses", 403)
    if room_id not in {r.id for r in services.config.rooms}:
        raise Problem(f"no room {room_id!r}")
    if scope.courses is not None and room_id not in auth.course_rooms(services.config, course_id):
        raise Problem(f"{course_id} is not timetabled in {room_id}: open its sessions in "
                      f"{', '.join(sorted(auth.course_rooms(services.config, course_id))) or 'its rooms'}", 403)
    minutes = _int(fields["minutes"], "minutes") if str(fields.get("minutes") or "").strip() else None
    if minutes is not None and not 1 <= minutes <= 24 * 60:
        raise Problem("minutes must be between 1 and 1440")
    open_session = attendance_api.open_session
    async with services.conn() as conn:
        if minutes is not None:
            await _no_other_class(services, conn, course_id, room_id, minutes)
        kwargs = {"course_id": course_id, "room_id": room_id, "actor": user.username}
        if minutes is not None:  # a one-off session from now; without: the timetable session running now
            kwargs["minutes"] = minutes
        result = await open_session(conn, **kwargs)
    session_id = result.get("id") or result.get("session_id") if isinstance(result, dict) else result
    return done(request, {"session_id": session_id}, f"session {session_id} of {course_id} opened in {room_id}", 201)


@api("/api/sessions/{session_id:int}/close", STAFF, methods=("POST",))
async def close_session_api(request: Request) -> Response:
    """Close a session by hand (faculty: their courses); attendance is final from then on."""
    services, user = services_of(request), _user(request)
    session_id = request.path_params["session_id"]
    close_session = attendance_api.close_session
    async with services.conn() as conn:
        item = await _session_in_scope(request, conn, session_id)
        if item["state"] == "closed":
            raise Problem(f"session {session_id} is closed already", 409)
        try:
            await close_session(conn, session_id, actor=user.username)
        except (ValueError, LookupError) as exc:
            raise Problem(str(exc), 409) from None
    return done(request, {"session_id": session_id, "state": "closed"}, f"session {session_id} closed")


@api("/api/sessions/{session_id:int}/attendance/{person_id}/resolve", STAFF, methods=("POST",))
async def resolve_attendance_api(request: Request) -> Response:
    """Resolve an unconfirmed record (recognised at the door, too little presence in the room) of a closed
    session: {status: present | late | absent}; faculty for their courses."""
    services, user = services_of(request), _user(request)
    session_id, person_id = request.path_params["session_id"], request.path_params["person_id"]
    status = str((await body(request)).get("status") or "")
    resolve = attendance_api.resolve_unconfirmed
    async with services.conn() as conn:
        await _session_in_scope(request, conn, session_id)
        await resolve(conn, session_id, person_id, status, actor=user.username)  # RollcallError: a 400
    return done(request, {"session_id": session_id, "person_id": person_id, "status": status},
                f"{person_id}: {status} (resolved by {user.username})")


async def _no_other_class(services: Services, conn, course_id: str, room_id: str, minutes: int) -> None:
    """A session opened by hand takes the room's sightings over any timetable session there (the writer
    prefers it), so a one-off session may not overlap another course's session in the room, from its
    early-arrival window to its end: that class would be marked absent."""
    course = next(c for c in services.config.courses if c.id == course_id)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=course.policy.early_arrival_min), now + dt.timedelta(minutes=minutes)
    clashes = [(c, s) for c, s, _ in auth.timetable_intervals(services.config, room_id, start, end) if c != course_id]
    clashes += [(r["course_id"], dt.datetime.fromisoformat(r["starts_at"]))
                for r in await queries.other_sessions_in_room(conn, room_id, course_id, start, end)]
    if clashes:
        other, at = min(clashes, key=lambda item: item[1])
        local = at.astimezone(ZoneInfo(services.config.site.timezone)).strftime("%Y-%m-%d %H:%M")
        raise Problem(f"{room_id} has a session of {other} at {local} within this one: a session opened by hand "
                      "would take its sightings; open the course's own timetable session, or a shorter one", 409)


async def _export(request: Request, export, what: str, *args) -> Response:
    fmt = request.query_params.get("format", "csv")
    if fmt not in EXPORT_TYPES:
        raise Problem(f"format {fmt!r} is not one of csv, xlsx")
    services = services_of(request)
    async with services.conn() as conn:  # the export writes its audit_log row, naming the user
        data = await export(conn, *args, fmt, tz=services.config.site.timezone, actor=_user(request).username)
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", f"attendance-{what}.{fmt}")
    return Response(data, media_type=EXPORT_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@api("/api/sessions/{session_id:int}/export", STAFF)
async def export_session(request: Request) -> Response:
    """One session's attendance as ?format=csv or xlsx."""
    session_id = request.path_params["session_id"]
    async with services_of(request).conn() as conn:
        await _session_in_scope(request, conn, session_id)
    return await _export(request, attendance_api.export_session, f"session-{session_id}", session_id)


@page("/attendance/courses/{course_id}", STAFF)
async def course_page(request: Request) -> Response:
    """A course: its sessions and each student's attendance rate."""
    item = await _course(request)
    return render(request, "course.html", {"c": item, "filters": request.query_params})


async def _course(request: Request) -> dict:
    services = services_of(request)
    course_id = request.path_params["course_id"]
    if not _scope(request).course(course_id):
        raise Problem(f"course {course_id!r} is not one of your courses", 403)
    q = request.query_params
    async with services.conn() as conn:
        item = await queries.course_summary(conn, course_id, date_from=_date(q.get("from"), "from"),
                                            date_to=_date(q.get("to"), "to"), timezone=services.config.site.timezone)
    if item is None:
        raise Problem(f"no course {course_id!r}", 404)
    return item


@api("/api/courses/{course_id}", STAFF)
async def course_api(request: Request) -> Response:
    """A course's sessions and per-student rates (?from= &to=)."""
    return JSONResponse(await _course(request))


@api("/api/courses/{course_id}/export", STAFF)
async def export_course(request: Request) -> Response:
    """A course's attendance (?from= &to= &format=csv|xlsx)."""
    await _course(request)
    return await _export(request, attendance_api.export_course, f"course-{request.path_params['course_id']}",
                         request.path_params["course_id"], *_date_range(request))


async def _student(request: Request) -> dict:
    services = services_of(request)
    person_id = request.path_params["person_id"]
    q = request.query_params
    async with services.conn() as conn:
        await _student_allowed(request, conn, person_id)
        item = await queries.student_record(
            conn, person_id, courses=_scope(request).courses if _user(request).role == "faculty" else None,
            course=q.get("course") or None, date_from=_date(q.get("from"), "from"), date_to=_date(q.get("to"), "to"),
            timezone=services.config.site.timezone)
    if item is None:
        raise Problem(f"no person {person_id!r}", 404)
    return item


@page("/attendance/students/{person_id}", ALL)
async def student_page(request: Request) -> Response:
    """A student's attendance (students: their own only)."""
    return render(request, "student.html", {"r": await _student(request), "filters": request.query_params})


@api("/api/students/{person_id}", ALL)
async def student_api(request: Request) -> Response:
    """A student's attendance record (?course= &from= &to=); students: their own only."""
    return JSONResponse(await _student(request))


@api("/api/students/{person_id}/export", ALL)
async def export_student(request: Request) -> Response:
    """A student's attendance as ?format=csv or xlsx (?from= &to=); faculty: their courses' sessions only."""
    await _student(request)
    response = await _export(request, attendance_api.export_student, f"student-{request.path_params['person_id']}",
                             request.path_params["person_id"], *_date_range(request))
    courses = _scope(request).courses if _user(request).role == "faculty" else None
    if courses is not None:  # the export covers every course of the student: keep the rows of theirs
        response.body = only_courses(response.body, request.query_params.get("format", "csv"), courses)
        response.headers["content-length"] = str(len(response.body))
    return response


def _date_range(request: Request) -> tuple[dt.date, dt.date]:
    """?from= &to= for an export; default: the last 365 days up to today (the site's time zone)."""
    from zoneinfo import ZoneInfo

    q = request.query_params
    today = dt.datetime.now(ZoneInfo(services_of(request).config.site.timezone)).date()
    date_to = _date(q.get("to"), "to") or today
    date_from = _date(q.get("from"), "from") or date_to - dt.timedelta(days=365)
    if date_from > date_to:
        raise Problem("from is after to")
    return date_from, date_to


# ------------------------------------------------------------------------------------------ people

@page("/people", ADMIN)
async def people_page(request: Request) -> Response:
    """People: enrol with photos and consent, list, erase."""
    async with services_of(request).conn() as conn:
        rows = await queries.people(conn, search=request.query_params.get("q") or None)
    return render(request, "people.html", {"people": rows, "q": request.query_params.get("q", "")})


@api("/api/people", ADMIN)
async def people_api(request: Request) -> Response:
    """Everyone the database knows (?q= to search by id or name), with enrolment counts."""
    async with services_of(request).conn() as conn:
        return JSONResponse({"people": await queries.people(conn, search=request.query_params.get("q") or None)})


@api("/api/people", ADMIN, methods=("POST",))
async def enrol_api(request: Request) -> Response:
    """Enrol a person (multipart: person_id, name, consent=yes, photos[]): the CLI's checks, a reason per photo."""

    services, user = services_of(request), _user(request)
    form = request.state.form
    if form is None:
        raise Problem("send the photos as multipart/form-data (fields person_id, name, consent, photos)")
    person_id = str(form.get("person_id") or "").strip()
    name = str(form.get("name") or "").strip() or None
    consent = str(form.get("consent") or "").lower() in ("yes", "on", "true", "1")
    uploads = [f for f in form.getlist("photos") if hasattr(f, "read") and getattr(f, "filename", "")]
    if not consent:
        raise Problem("refusing to enrol without consent: confirm the person agreed to face recognition "
                      "(tick the consent box)")
    if not uploads:
        raise Problem("no photos: choose at least one photo of the person")
    config = services.config
    refused = []
    with tempfile.TemporaryDirectory(prefix="rollcall-enrol-") as folder:
        paths = []
        for index, upload in enumerate(uploads):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.filename).name)[:80] or "photo"
            data = await upload.read()
            refusal = check_image(data, config.dashboard.max_image_pixels)  # before OpenCV decodes it
            if refusal:
                refused.append({"photo": safe, "code": refusal[0], "reason": refusal[1]})
                continue
            path = Path(folder) / f"{index:02d}-{safe}"
            path.write_bytes(data)
            paths.append(path)
        if not paths:
            return JSONResponse({"person_id": person_id, "accepted": [], "rejected": refused,
                                 "summary": "no photo could be used"}, status_code=422)
        report = await enroll_photos(services.database_url, person_id, name, paths, consent=True,
                                     consent_by=user.username, pack=config.models.pack, thresholds=config.thresholds,
                                     privacy=config.privacy, source="dashboard")
    services.forget_names()

    def shown(path: Path) -> str:
        return path.name[3:]

    result = {"person_id": person_id, "model_pack": report.model_pack, "summary": report.summary(),
              "accepted": [{"photo": shown(a.path), "enrolment_id": a.enrolment_id, "quality": round(a.quality, 3),
                            "renewed": a.renewed} for a in report.accepted],
              "rejected": refused + [{"photo": shown(r.path), "code": r.code, "reason": r.reason}
                                     for r in report.rejected]}
    return JSONResponse(result, status_code=201 if report.accepted else 422)


@api("/api/people/{person_id}/erase", ADMIN, methods=("POST",))
async def erase_api(request: Request) -> Response:
    """Erase a person (face data and identity; attendance kept under a pseudonym when the policy says so)."""
    services, user = services_of(request), _user(request)
    person_id = request.path_params["person_id"]
    erase_person = attendance_api.erase_person
    async with services.conn() as conn:
        if await conn.fetchval("SELECT 1 FROM person WHERE id = $1", person_id) is None:
            raise Problem(f"no person {person_id!r}", 404)
        # erase_person removes their dashboard accounts too (and pseudonymises the audit rows naming them)
        result = await erase_person(conn, person_id, pseudonymise=services.config.privacy.pseudonymise_attendance_on_erase,
                                    actor=user.username, privacy=services.config.privacy)
    services.forget_names()
    payload = result if isinstance(result, dict) else {"result": str(result)} if result is not None else {}
    return done(request, {"person_id": person_id, **payload}, f"{person_id} erased")


# ------------------------------------------------------------------------------------------ review

@page("/review", ADMIN)
async def review_page(request: Request) -> Response:
    """The unknown-face review queue."""
    async with services_of(request).conn() as conn:
        rows = await queries.review_queue(conn)
    return render(request, "review.html", {"items": rows})


@api("/api/review", ADMIN)
async def review_api(request: Request) -> Response:
    """Pending review items (?status=pending|accepted|rejected)."""
    status = request.query_params.get("status", "pending")
    if status not in ("pending", "accepted", "rejected"):
        raise Problem(f"status {status!r} is not one of pending, accepted, rejected")
    async with services_of(request).conn() as conn:
        return JSONResponse({"items": await queries.review_queue(conn, status=status)})


@api("/api/review/{review_id:int}/crop.jpg", ADMIN)
async def review_crop(request: Request) -> Response:
    """The best crop of an unknown face (JPEG)."""
    async with services_of(request).conn() as conn:
        data = await queries.review_crop(conn, request.path_params["review_id"])  # None once expired
        if data is not None:  # who looked at which face: audit_log 'review.crop_view'
            await attendance_api.record_audit(conn, _user(request).username, "review.crop_view",
                                                       str(request.path_params["review_id"]))
    if data is None:
        raise Problem("no crop for this review item", 404)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@api("/api/review/{review_id:int}/accept", ADMIN, methods=("POST",))
async def review_accept(request: Request) -> Response:
    """Accept a face: {person_id, name?, new_person: bool, consent: yes}; its embedding becomes a face_enrolment."""

    services, user = services_of(request), _user(request)
    fields = await body(request)
    person_id = str(fields.get("person_id") or "").strip()
    if not PERSON_ID.match(person_id):
        raise Problem(f"person id {person_id!r} is not valid: letters, digits, '_', '.', '-' (up to 64)")
    if str(fields.get("consent") or "").lower() not in ("yes", "on", "true", "1") and fields.get("consent") is not True:
        raise Problem("refusing to enrol without consent: confirm the person agreed to face recognition")
    new_person = str(fields.get("new_person") or "").lower() in ("yes", "on", "true", "1") or fields.get("new_person") is True
    async with services.conn() as conn:
        try:
            result = await queries.accept_review(
                conn, request.path_params["review_id"], person_id=person_id, name=str(fields.get("name") or "") or None,
                new_person=new_person, actor=user.username, consent_note=str(fields.get("note") or "") or None,
                retention_days=services.config.privacy.enrolment_retention_days)
        except queries.ReviewProblem as exc:
            raise Problem(str(exc), exc.status) from None
    services.forget_names()
    return done(request, result, f"face accepted as {person_id}")


@api("/api/review/{review_id:int}/reject", ADMIN, methods=("POST",))
async def review_reject(request: Request) -> Response:
    """Reject a face (its crop is deleted)."""
    async with services_of(request).conn() as conn:
        try:
            result = await queries.reject_review(conn, request.path_params["review_id"], actor=_user(request).username)
        except queries.ReviewProblem as exc:
            raise Problem(str(exc), exc.status) from None
    return done(request, result, "face rejected")


# ------------------------------------------------------------------------------------------ health

async def _health(services: Services) -> dict:

    config = services.config
    database: dict[str, Any] = {"state": "unknown"}
    conn_for_lag = None
    try:
        started = time.perf_counter()
        async with services.conn() as conn:
            await conn.fetchval("SELECT 1")
            database = {"state": "up", "ping_ms": round((time.perf_counter() - started) * 1000, 1)}
            topics = [config.kafka.topics.recognitions.name, config.kafka.topics.presence.name]
            lag = await consumer_lag(conn, services.hub, config.attendance.group_id, topics,
                                     services.kafka_bootstrap_servers)
    except Problem as exc:
        database = {"state": "down", "error": exc.message}
        lag = {"error": "database unavailable"}
    del conn_for_lag
    cameras = []
    for camera in config.cameras:
        metrics = services.metrics.cameras.get(camera.id, {}) if services.metrics else {}
        feed = services.video.feeds.get(camera.id) if services.video else None
        cameras.append({"id": camera.id, "name": camera.name, "role": camera.role, "room_id": camera.room,
                        "enabled": camera.enabled, "state": metrics.get("state"), "fps": metrics.get("fps"),
                        "analysis_fps": metrics.get("analysis_fps"), "drops_per_s": metrics.get("drops_per_s"),
                        "dropped": metrics.get("dropped"), "decoded": metrics.get("decoded"),
                        "reconnects": metrics.get("reconnects"), "tracking_fps": metrics.get("tracking_fps"),
                        "min_fps": metrics.get("min_fps"), "shortfall_fps": metrics.get("shortfall_fps"),
                        "dashboard_video": feed.state if feed and feed.source else "idle"})
    return {"cameras": cameras, "processors": services.metrics.sources if services.metrics else {},
            "broker": services.hub.status(), "database": database, "consumer_lag": lag,
            "video_peers": len(services.video.peers) if services.video else 0}


@page("/health", ADMIN)
async def health_page(request: Request) -> Response:
    """Cameras (state, fps, drops), broker, database, the attendance writer's lag."""
    return render(request, "health.html", {"h": await _health(services_of(request))})


@api("/api/health", ADMIN)
async def health_api(request: Request) -> Response:
    """Cameras (state, fps, drops from the processors' /metrics), broker, database, consumer lag."""
    return JSONResponse(await _health(services_of(request)))


# ------------------------------------------------------------------------------------------ OpenAPI

@api("/api/openapi.json", ALL)
async def openapi(request: Request) -> Response:
    """This API's OpenAPI 3.1 document (generated from the routes, their roles and docstrings)."""

    return JSONResponse(document(request.app))


# ------------------------------------------------------------------------------------------ the app

class SecurityHeaders:
    """Content-Security-Policy (everything from this origin, no inline script), no framing, no sniffing."""

    HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                             b"script-src 'self'; style-src 'self'; connect-src 'self'; "
                                             b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
               (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"same-origin")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + self.HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(config, *, database_url: str, kafka_bootstrap_servers: str, camera_urls: dict[str, str] | None = None,
               secret_key: str | None = None, metrics_interval_s: float = 3.0, video_source_factory=None) -> Starlette:
    """The dashboard for ``config`` against resolved addresses (see infra/foundation/endpoints.py)."""

    services = Services(config, database_url, kafka_bootstrap_servers, dict(camera_urls or {}))
    services.limiter = auth.LoginLimiter(config.dashboard.login_max_failures, config.dashboard.login_window_s)
    services.streams = StreamLimits(config.dashboard.max_streams_per_user)
    topics = config.kafka.topics
    d = config.dashboard

    @contextlib.asynccontextmanager
    async def lifespan(app):
        services.hub = LiveHub(kafka_bootstrap_servers,
                               {"recognitions": topics.recognitions.name, "presence": topics.presence.name,
                                "occupancy": topics.occupancy.name, "overlays": topics.overlays.name},
                               client_id=f"{config.kafka.client_id}-dashboard",
                               security_protocol=config.kafka.security_protocol, presence_expiry_s=d.presence_expiry_s,
                               occupancy_history=d.occupancy_history_s, max_clients=d.max_live_clients,
                               client_queue=d.client_queue)
        services.video = VideoHub(config, services.camera_urls, services.hub.latest_overlay,
                                  source_factory=video_source_factory)
        services.metrics = ProcessorMetrics(list(d.processor_metrics_urls), metrics_interval_s)
        await services.hub.start()
        await services.metrics.start()
        with contextlib.suppress(Problem):
            await services.get_pool()
        try:
            yield
        finally:
            await services.video.close()
            await services.metrics.stop()
            await services.hub.stop()
            if services.pool is not None:
                await services.pool.close()

    routes = list(ROUTES) + [Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static")]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(BodyLimit, max_body_bytes=d.max_body_bytes, max_upload_bytes=d.max_upload_bytes),
                  Middleware(SessionMiddleware, secret_key=secret_key or auth.load_secret_key(config),
                             session_cookie="rollcall_session", max_age=d.session_max_age_s, same_site="lax",
                             https_only=d.https_only_cookies)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.services = services
    return app


def app_from_config(config) -> Starlette:
    """Resolve the config's addresses ("embedded" → the running stack) and build the app."""

    endpoints = resolve(config, need=("database", "kafka"))
    camera_urls = {c.id: c.url for c in config.cameras}
    return create_app(config, database_url=endpoints.database_url,
                      kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers, camera_urls=camera_urls)
