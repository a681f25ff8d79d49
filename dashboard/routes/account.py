"""Logging in and out, the start page, your account and your password."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from consumers import api as attendance_api
from dashboard import auth, queries
from dashboard.forms import Login, PasswordChange, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, Services, services_of
from dashboard.web import ALL, body, client_of, csrf_token, current_scope, current_user, done, home_of, render
from dashboard.web import safe_next

log = logging.getLogger("rollcall.dashboard")

ROUTES = RouteTable()


@ROUTES.page("/login", (), methods=("GET",), public=True, name="login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return render(request, "login.html", {"next": safe_next(request.query_params.get("next"), "")})


@ROUTES.page("/login", (), methods=("POST",), public=True)
async def login(request: Request) -> Response:
    """Log in (form or JSON {username, password}); rate-limited per account and per client address."""
    services = services_of(request)
    fields = parse(Login, await body(request))
    username, password = fields.username.strip()[:100], fields.password[:1000]
    client = client_of(request)
    wait, attempt = services.limiter.attempt(username, client)
    if wait:
        log.warning("login refused (rate limit) for %r from %s", username, client)
        return _login_refused(request, fields, f"too many failed logins: try again in {wait} s", 429,
                              headers={"Retry-After": str(wait)})
    stored = None
    if auth.USERNAME.match(username):
        async with services.conn() as conn:
            stored = await auth.password_hash_of(conn, username)
    if not await asyncio.to_thread(auth.verify_password, stored, password):
        await _failed_login(services, username, client)
        return _login_refused(request, fields, "wrong username or password", 400)
    services.limiter.succeeded(username, client, attempt)
    async with services.conn() as conn:
        await queries.record_login(conn, username)
        user = await auth.get_user(conn, username)
        await attendance_api.audit_login(conn, username, ok=True, client=client)
        await auth.end_session(conn, request.session.get("sid"))
        session_id = await auth.start_session(conn, username, services.config.dashboard.session_max_age_s, client)
    request.session.clear()
    request.session.update({"sid": session_id, "csrf": auth.new_csrf_token(), "at": int(time.time())})
    if request.state.form is None:
        return JSONResponse({"username": user.username, "role": user.role, "person_id": user.person_id,
                             "csrf_token": request.session["csrf"]})
    target = safe_next(fields.next, home_of(user))
    if user.role == "student" and not target.startswith(home_of(user)):
        target = home_of(user)  # the page asked for is not theirs to see: their own record instead
    return RedirectResponse(target, status_code=303)


def _login_refused(request: Request, fields: Login, message: str, status: int, headers: dict | None = None
                   ) -> Response:
    """JSON for a JSON login, else the login form again with the message."""
    if request.state.form is None:
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return render(request, "login.html", {"error": message, "next": fields.next}, status=status)


async def _failed_login(services: Services, username: str, client: str, reason: str = "wrong password") -> None:
    """Said in the log and kept in the audit log (who tried which account from where)."""
    log.warning("failed login for %r from %s (%s)", username[:64], client, reason)
    async with services.conn() as conn:
        await attendance_api.audit_login(conn, username, ok=False, client=client, reason=reason)


@ROUTES.page("/logout", ALL, methods=("POST",))
async def logout(request: Request) -> Response:
    """Log out: the session ends on the server too (a copy of the cookie is no longer let in)."""
    async with services_of(request).conn() as conn:
        await auth.end_session(conn, request.session.get("sid"))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@ROUTES.api("/api/me/password", ALL, methods=("POST",))
async def change_password(request: Request) -> Response:
    """Change your password: {current_password, new_password}; ends your other sessions."""
    services, user = services_of(request), current_user(request)
    fields = parse(PasswordChange, await body(request))
    client = client_of(request)
    wait, attempt = services.limiter.attempt(user.username, client)
    if wait:
        raise Problem(f"too many failed attempts: try again in {wait} s", 429)
    async with services.conn() as conn:
        stored = await auth.password_hash_of(conn, user.username)
    if not await asyncio.to_thread(auth.verify_password, stored, fields.current_password[:1000]):
        await _failed_login(services, user.username, client, "wrong current password on a password change")
        raise Problem("the current password is wrong", 400)
    services.limiter.succeeded(user.username, client, attempt)
    async with services.conn() as conn:
        ended = await auth.change_password(conn, user.username, fields.new_password[:1000],
                                           keep=request.session.get("sid"))
    return done(request, {"sessions_ended": ended}, f"password changed; {ended} other session(s) ended")


@ROUTES.page("/", ALL)
async def home(request: Request) -> Response:
    """The user's start page."""
    return RedirectResponse(home_of(current_user(request)), status_code=303)


@ROUTES.api("/api/me", ALL)
async def me(request: Request) -> Response:
    """The logged-in account, its role, what it may see, and its CSRF token."""
    user, scope = current_user(request), current_scope(request)
    return JSONResponse({"username": user.username, "role": user.role, "person_id": user.person_id,
                         "csrf_token": csrf_token(request),
                         "courses": sorted(scope.courses) if scope.courses is not None else None,
                         "rooms": sorted(scope.rooms) if scope.rooms is not None else None})
