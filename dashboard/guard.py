"""The guard every route is declared through, with the roles that may use it.

:class:`RouteTable` (``ROUTES.page(...)`` / ``ROUTES.api(...)``) wraps each handler in :func:`guard`,
which refuses malformed path and query values (4xx), an anonymous request (pages: 303 to /login, API:
401 JSON), a role that may not (403), and an unsafe method (POST, PUT, PATCH, DELETE) without the
session's CSRF token (403), all before the request's body is read; and answers a :class:`Problem` (and
the few other errors a handler may let through) as one line with its status.
"""

from __future__ import annotations

from typing import Awaitable, Callable
from urllib.parse import quote

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from dashboard import auth
from dashboard.limits import BodyTooLarge
from dashboard.services import Problem, services_of
from dashboard.web import error_response, wants_json
from infra.foundation.errors import RollcallError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is no row, not an error
MAX_PARAM_CHARS = 1000

Handler = Callable[[Request], Awaitable[Response]]


def guard(endpoint: Handler, roles: tuple[str, ...], *, public: bool = False) -> Handler:
    async def guarded(request: Request) -> Response:
        request.state.form = None
        try:
            if not public:
                refusal = await _let_in(request, roles)
                if refusal is not None:
                    return refusal
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


async def _let_in(request: Request, roles: tuple[str, ...]) -> Response | None:
    """The session's user and scope on ``request.state``; a response for an anonymous request; a 403
    Problem for a role not in ``roles``."""
    user = await services_of(request).user(request.session.get("sid"))
    if user is None:
        if wants_json(request):
            return JSONResponse({"error": "not logged in: POST /login first"}, status_code=401)
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    request.state.user = user
    request.state.scope = await services_of(request).scope(user)
    if user.role not in roles:
        raise Problem(f"a {user.role} account may not open {request.url.path}", 403)
    return None


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


class RouteTable(list[Route]):
    """A route module's routes, each declared with the roles that may use it (``()`` and ``public=True``:
    anyone, e.g. the login form)."""

    def page(self, path: str, roles: tuple[str, ...], methods=("GET",), name: str | None = None,
             public: bool = False):
        def add(endpoint: Handler) -> Handler:
            self.append(Route(path, guard(endpoint, roles, public=public), methods=list(methods), name=name))
            return endpoint
        return add

    api = page  # the same guard; /api/ paths answer in JSON
