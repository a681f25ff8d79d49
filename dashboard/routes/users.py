"""Dashboard accounts (admin): the list, a new account, a password reset, disabling, a faculty account's
courses, the e-mail address of an account's person; and every user's own page (password, e-mail address). The logic is in :mod:`dashboard.accounts`.

A one-time password is answered in the response only (the page, or JSON): never in the flash message,
which travels in the signed but readable session cookie."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import accounts
from dashboard.forms import AccountCourses, AccountForm, parse
from dashboard.guard import RouteTable
from dashboard.services import Problem, services_of
from dashboard.web import ADMIN, ALL, body, current_user, done, render

ROUTES = RouteTable()


async def _fields(request: Request) -> dict:
    """The request's fields, with a form's several ``courses`` values as one list."""
    fields = await body(request)
    if request.state.form is not None:
        fields["courses"] = request.state.form.getlist("courses")
    return fields


async def _accounts_page(request: Request, context: dict | None = None, status: int = 200) -> Response:
    services = services_of(request)
    async with services.conn() as conn:
        rows = await accounts.accounts(conn)
    courses = [c.id for c in (await services.campus()).courses]
    return render(request, "accounts.html", {"accounts": rows, "courses": courses, **(context or {})}, status=status)


async def _one_time(request: Request, username: str, password: str, message: str, status: int) -> Response:
    """The one-time password: JSON for the API, else the accounts page showing it once."""
    if request.state.form is None:
        response = JSONResponse({"username": username, "password": password, "message": message}, status_code=status)
    else:
        response = await _accounts_page(request, {"one_time": (username, password), "message": message}, status)
    response.headers["Cache-Control"] = "no-store"  # the password must not stay in a cache
    return response


@ROUTES.page("/accounts", ADMIN)
async def accounts_page(request: Request) -> Response:
    """Accounts: the list, a new account, reset, disable or enable, a faculty account's courses."""
    return await _accounts_page(request)


@ROUTES.api("/api/accounts", ADMIN)
async def accounts_api(request: Request) -> Response:
    """Every dashboard account: role, person, disabled, last login, courses (faculty)."""
    async with services_of(request).conn() as conn:
        return JSONResponse({"accounts": await accounts.accounts(conn)})


@ROUTES.api("/api/accounts", ADMIN, methods=("POST",))
async def create_account(request: Request) -> Response:
    """A new account {username, role, person_id, name?, email?, courses?}; answers its one-time password, once."""
    services, admin = services_of(request), current_user(request)
    form = parse(AccountForm, await _fields(request))
    async with services.conn() as conn:
        password = await accounts.create_account(conn, username=form.username, role=form.role,
                                                 person_id=form.person_id, name=form.name, courses=form.courses,
                                                 actor=admin.username, email=form.email)
    services.forget_campus()
    services.forget_names()
    message = f"account {form.username} ({form.role}) added"
    return await _one_time(request, form.username, password, message, 201)


@ROUTES.api("/api/accounts/{username}/reset", ADMIN, methods=("POST",))
async def reset_password(request: Request) -> Response:
    """A new one-time password for the account (its sessions end); answered once."""
    services, admin = services_of(request), current_user(request)
    username = request.path_params["username"]
    if username == admin.username:
        raise Problem("change your own password on the My password page (it asks for the current one)", 409)
    async with services.conn() as conn:
        try:
            password, ended = await accounts.reset_password(conn, username, actor=admin.username)
        except LookupError:
            raise Problem(f"no account {username!r}", 404) from None
    message = f"password of {username} reset; {ended} session(s) ended"
    return await _one_time(request, username, password, message, 200)


async def _disable(request: Request, disabled: bool) -> Response:
    admin = current_user(request)
    username = request.path_params["username"]
    if username == admin.username and disabled:
        raise Problem("you may not disable your own account", 409)
    async with services_of(request).conn() as conn:
        try:
            ended = await accounts.set_disabled(conn, username, disabled, actor=admin.username)
        except LookupError:
            raise Problem(f"no account {username!r}", 404) from None
    state = "disabled" if disabled else "enabled"
    return done(request, {"username": username, "disabled": disabled, "sessions_ended": ended},
                f"account {username} {state}" + (f"; {ended} session(s) ended" if disabled else ""))


@ROUTES.api("/api/accounts/{username}/disable", ADMIN, methods=("POST",))
async def disable_account(request: Request) -> Response:
    """Disable an account: it cannot log in, and its sessions end at once."""
    return await _disable(request, True)


@ROUTES.api("/api/accounts/{username}/enable", ADMIN, methods=("POST",))
async def enable_account(request: Request) -> Response:
    """Enable a disabled account again."""
    return await _disable(request, False)


@ROUTES.api("/api/accounts/{username}/courses", ADMIN, methods=("POST",))
async def account_courses(request: Request) -> Response:
    """The courses a faculty account teaches {courses: [...]} (all of them: the others are dropped)."""
    services, admin = services_of(request), current_user(request)
    username = request.path_params["username"]
    wanted = parse(AccountCourses, await _fields(request)).courses
    async with services.conn() as conn:
        courses = await accounts.set_faculty_courses(conn, username, wanted, actor=admin.username)
    services.forget_campus()
    return done(request, {"username": username, "courses": courses},
                f"{username} teaches {', '.join(courses) or 'no course'}")


async def _set_email(request: Request, username: str) -> Response:
    """The e-mail address {email} ("" removes it) of ``username``'s person: where their reports go."""
    email = accounts.email_address((await body(request)).get("email"))
    async with services_of(request).conn() as conn:
        try:
            person_id = await accounts.set_email(conn, username, email, actor=current_user(request).username)
        except LookupError:
            raise Problem(f"no account {username!r}", 404) from None
    return done(request, {"username": username, "person_id": person_id, "email": email or None},
                f"e-mail of {username} " + (f"set to {email}" if email else "removed"))


@ROUTES.api("/api/accounts/{username}/email", ADMIN, methods=("POST",))
async def account_email(request: Request) -> Response:
    """The e-mail address of the account's person {email} ("" removes it): where their reports go."""
    return await _set_email(request, request.path_params["username"])


@ROUTES.api("/api/me/email", ALL, methods=("POST",))
async def own_email(request: Request) -> Response:
    """Your e-mail address {email} ("" removes it), when your account belongs to a person."""
    return await _set_email(request, current_user(request).username)


@ROUTES.page("/account", ALL)
async def own_account_page(request: Request) -> Response:
    """Your account: change your password (the form posts to /api/me/password) and your e-mail address."""
    user = current_user(request)
    email = None
    if user.person_id:
        async with services_of(request).conn() as conn:
            email = await accounts.email_of(conn, user.person_id)
    return render(request, "account.html", {"email": email or ""})
