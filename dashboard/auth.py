"""Accounts, passwords, roles and what each role may see.

- Passwords: argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), verified in a worker thread; an
  unknown username costs the same as a wrong password (a dummy hash is verified).
- Sessions: Starlette's signed cookie (itsdangerous) holding the username and the CSRF token only; the
  account is re-read from PostgreSQL (cached a few seconds), so disabling a user takes effect at once.
- CSRF: a random token per session, sent back in the ``X-CSRF-Token`` header (JavaScript) or a
  ``csrf_token`` form field; every state-changing request without the matching token is refused.
- Login rate limit: ``dashboard.login_max_failures`` failures per (username, client) and five times as
  many per client within ``dashboard.login_window_s`` → 429 with Retry-After.
- Roles: ``admin`` everything; ``faculty`` the courses the config lists them under ``faculty`` (and
  those courses' rooms and cameras); ``student`` their own attendance only.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from infra.errors import RollcallError
from infra.paths import PROJECT_ROOT

ROLES = ("admin", "faculty", "student")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10

_hasher = None


def hasher():
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher()
    return _hasher


def hash_password(password: str) -> str:
    return hasher().hash(password)


_DUMMY_HASH: str | None = None


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; with ``password_hash`` None a dummy hash is checked (same cost)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    global _DUMMY_HASH
    if password_hash is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_hex(16))
        password_hash, ok = _DUMMY_HASH, False
    else:
        ok = True
    try:
        hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok


def check_password_strength(password: str, username: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"the password is too short: use at least {MIN_PASSWORD} characters"
    if password.lower() == username.lower():
        return "the password must not be the username"
    return None


def new_password() -> str:
    """A random password people can type (for the demo accounts)."""
    return secrets.token_urlsafe(12)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


# ------------------------------------------------------------------------------------------ secret key

def secret_key_path(config) -> Path:
    path = Path(config.dashboard.secret_key_file)
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_secret_key(config) -> str:
    """The cookie-signing key from ``dashboard.secret_key_file``; created (0600) with a random key when missing."""
    path = secret_key_path(config)
    try:
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 32:
            raise RollcallError(f"{path}: the dashboard secret key is too short (under 32 characters): "
                                "delete the file to get a new random one")
        return key
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise RollcallError(f"{path}: cannot read the dashboard secret key ({type(exc).__name__}): "
                            "fix it or point ROLLCALL__DASHBOARD__SECRET_KEY_FILE elsewhere") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


# ------------------------------------------------------------------------------------------ users

@dataclass(frozen=True)
class User:
    username: str
    role: str
    person_id: str | None
    display_name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def get_user(conn, username: str) -> User | None:
    row = await conn.fetchrow(
        """SELECT u.username, u.role, u.person_id, p.display_name FROM dashboard_user u
           LEFT JOIN person p ON p.id = u.person_id WHERE u.username = $1 AND NOT u.disabled""", username)
    return User(row["username"], row["role"], row["person_id"], row["display_name"]) if row else None


async def password_hash_of(conn, username: str) -> str | None:
    return await conn.fetchval("SELECT password_hash FROM dashboard_user WHERE username = $1 AND NOT disabled",
                               username)


async def create_user(conn, username: str, password: str, role: str, person_id: str | None = None, *,
                      created_by: str = "cli", replace: bool = False, check_strength: bool = True) -> User:
    """Add an account (``replace``: update an existing one's password, role and person). Raises RollcallError."""
    if not USERNAME.match(username or ""):
        raise RollcallError(f"username {username!r} is not valid: letters, digits, '_', '.', '@', '-' "
                            "(up to 64, starting with a letter or digit)")
    if role not in ROLES:
        raise RollcallError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role != "admin" and not person_id:
        raise RollcallError(f"a {role} account needs --person: the person id it belongs to")
    if check_strength:
        problem = check_password_strength(password, username)
        if problem:
            raise RollcallError(problem)
    if await conn.fetchval("SELECT to_regclass('public.dashboard_user')") is None:
        raise RollcallError("the database has no dashboard_user table: run `rollcall db migrate` first")
    if person_id:
        kind = await conn.fetchval("SELECT kind FROM person WHERE id = $1 AND pseudonymised_at IS NULL", person_id)
        if kind is None:
            raise RollcallError(f"no person {person_id!r}: enrol them or list them in a course's roster/faculty "
                                "and run `rollcall db load-config`")
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM dashboard_user WHERE username = $1", username)
        if exists and not replace:
            raise RollcallError(f"user {username!r} exists already: pass --replace to set a new password")
        await conn.execute(
            """INSERT INTO dashboard_user (username, password_hash, role, person_id, created_by)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role,
               person_id = EXCLUDED.person_id, disabled = false""",
            username, password_hash, role, person_id, created_by)
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, jsonb_build_object('role', $4::text))",
            created_by, "user.replace" if exists else "user.add", username, role)
    return User(username, role, person_id)


# ------------------------------------------------------------------------------------------ rate limit

class LoginLimiter:
    """Sliding-window counts of failed logins per (username, client) and per client."""

    def __init__(self, max_failures: int, window_s: float):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[tuple, collections.deque] = {}

    def _recent(self, key: tuple, now: float) -> collections.deque:
        times = self._failures.setdefault(key, collections.deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, username: str, client: str) -> int:
        """Seconds until another attempt is allowed; 0 = now."""
        now = time.monotonic()
        waits = []
        for key, limit in (((username.lower(), client), self.max_failures), ((client,), self.max_failures * 5)):
            times = self._recent(key, now)
            if len(times) >= limit:
                waits.append(times[len(times) - limit] + self.window_s - now)
        return max(1, int(max(waits)) + 1) if waits else 0

    def failed(self, username: str, client: str) -> None:
        now = time.monotonic()
        for key in ((username.lower(), client), (client,)):
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # bounded: forget the idle keys
            for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
                del self._failures[key]

    def succeeded(self, username: str, client: str) -> None:
        self._failures.pop((username.lower(), client), None)


# ------------------------------------------------------------------------------------------ scope

@dataclass(frozen=True)
class Scope:
    """What a user may see. None = everything (admin)."""

    courses: frozenset[str] | None
    rooms: frozenset[str] | None
    cameras: frozenset[str] | None
    person_id: str | None = None

    def course(self, course_id: str) -> bool:
        return self.courses is None or course_id in self.courses

    def room(self, room_id: str | None) -> bool:
        return self.rooms is None or (room_id is not None and room_id in self.rooms)

    def camera(self, camera_id: str) -> bool:
        return self.cameras is None or camera_id in self.cameras


def scope_of(user: User, config) -> Scope:
    if user.role == "admin":
        return Scope(None, None, None, user.person_id)
    if user.role == "faculty":
        courses = frozenset(c.id for c in config.courses if user.person_id in c.faculty)
        rooms = frozenset(t.room for t in config.timetable if t.course in courses)
        cameras = frozenset(c.id for c in config.cameras if c.room in rooms)
        return Scope(courses, rooms, cameras, user.person_id)
    return Scope(frozenset(), frozenset(), frozenset(), user.person_id)
