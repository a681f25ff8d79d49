"""Accounts, passwords, sessions, roles and what each role may see.

- Passwords: argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), verified in a worker thread; an
  unknown username costs the same as a wrong password (a dummy hash is verified).
- Sessions: Starlette's signed cookie (itsdangerous) holds a random session id and the CSRF token;
  PostgreSQL holds the id's SHA-256 (``dashboard_session``, migration 0007) with its expiry. Every
  request looks the session and its account up, so logging out, a password change (which ends the
  account's other sessions), disabling or removing the account take effect at once.
- CSRF: a random token per session, sent back in the ``X-CSRF-Token`` header (JavaScript) or a
  ``csrf_token`` form field; every state-changing request without the matching token is refused.
- Login rate limit: an attempt is counted *before* its password is checked (so parallel attempts
  cannot slip past the check) and uncounted when it succeeds: ``dashboard.login_max_failures`` per
  account (from any address) and five times as many per client address within
  ``dashboard.login_window_s`` → 429 with Retry-After. The client address is the peer's, or the
  X-Forwarded-For hop in front of the nearest ``dashboard.trusted_proxies`` entry.
- Roles: ``admin`` everything; ``faculty`` the courses the roster lists them as faculty of (and
  those courses' rooms and cameras; live data only of the rooms where one of their courses has a
  session at that time: see :func:`timetable_windows` and ``queries.live_sessions``); ``student``
  their own attendance only.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT

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
        if exists:  # a new password (or role) ends every session opened with the old one
            await revoke_sessions(conn, username)
    return User(username, role, person_id)


# ------------------------------------------------------------------------------------------ sessions

def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8")).digest()


async def start_session(conn, username: str, max_age_s: int, client: str | None) -> str:
    """A new server-side session of ``username``; returns its id (for the signed cookie only)."""
    session_id = new_session_id()
    await conn.execute("DELETE FROM dashboard_session WHERE expires_at < now() - interval '1 day'")
    await conn.execute(
        """INSERT INTO dashboard_session (id_sha256, username, expires_at, client)
           VALUES ($1, $2, now() + make_interval(secs => $3), $4)""",
        _digest(session_id), username, float(max_age_s), client)
    return session_id


async def session_user(conn, session_id: str | None) -> User | None:
    """The account of a live session (not revoked, not expired, account enabled), else None."""
    if not session_id or not isinstance(session_id, str) or len(session_id) > 100:
        return None
    row = await conn.fetchrow(
        """SELECT u.username, u.role, u.person_id, p.display_name
           FROM dashboard_session s JOIN dashboard_user u ON u.username = s.username
           LEFT JOIN person p ON p.id = u.person_id
           WHERE s.id_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled""",
        _digest(session_id))
    return User(row["username"], row["role"], row["person_id"], row["display_name"]) if row else None


async def end_session(conn, session_id: str | None) -> None:
    if session_id and isinstance(session_id, str):
        await conn.execute("UPDATE dashboard_session SET revoked_at = now() WHERE id_sha256 = $1 AND revoked_at IS NULL",
                           _digest(session_id))


async def revoke_sessions(conn, username: str, *, keep: str | None = None) -> int:
    """End every session of ``username`` but ``keep``; returns how many were ended."""
    result = await conn.execute(
        """UPDATE dashboard_session SET revoked_at = now()
           WHERE username = $1 AND revoked_at IS NULL AND id_sha256 IS DISTINCT FROM $2""",
        username, _digest(keep) if keep else None)
    return int(result.split()[-1])


async def change_password(conn, username: str, new_password: str, *, keep: str | None) -> int:
    """Set a new password (checked for strength) and end the account's other sessions."""
    problem = check_password_strength(new_password, username)
    if problem:
        raise RollcallError(problem)
    password_hash = await asyncio.to_thread(hash_password, new_password)
    async with conn.transaction():
        await conn.execute("UPDATE dashboard_user SET password_hash = $2 WHERE username = $1", username, password_hash)
        ended = await revoke_sessions(conn, username, keep=keep)
        await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) "
                           "VALUES ($1, 'user.password', $1, jsonb_build_object('sessions_ended', $2::int))",
                           username, ended)
    return ended


# ------------------------------------------------------------------------------------------ rate limit

class LoginLimiter:
    """Sliding-window counts of login attempts per account and per client address.

    :meth:`attempt` counts an attempt and says whether it may go on, in one synchronous step on the event
    loop (nothing can run between the check and the count), before the password is checked; a
    successful login takes its attempt back (:meth:`succeeded`), so what stays counted are failures and
    attempts still being checked."""

    def __init__(self, max_failures: int, window_s: float, per_address_factor: int = 5):
        self.max_failures = max_failures
        self.window_s = window_s
        self.per_address = max_failures * per_address_factor
        self._failures: dict[tuple, collections.deque] = {}

    def _keys(self, username: str, client: str) -> tuple[tuple[tuple, int], ...]:
        return ((("user", username.lower()), self.max_failures), (("address", client), self.per_address))

    def _recent(self, key: tuple, now: float) -> collections.deque:
        times = self._failures.setdefault(key, collections.deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def attempt(self, username: str, client: str) -> tuple[int, float | None]:
        """(seconds to wait, 0 = go on; the attempt's token for :meth:`succeeded`, None when refused)."""
        now = time.monotonic()
        waits = []
        for key, limit in self._keys(username, client):
            times = self._recent(key, now)
            if len(times) >= limit:
                waits.append(times[len(times) - limit] + self.window_s - now)
        if waits:
            return max(1, int(max(waits)) + 1), None
        for key, _ in self._keys(username, client):
            self._failures[key].append(now)
        if len(self._failures) > 100_000:  # bounded: forget the idle keys
            for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
                del self._failures[key]
        return 0, now

    def succeeded(self, username: str, client: str, token: float) -> None:
        for key, _ in self._keys(username, client):
            times = self._failures.get(key)
            if times is not None and token in times:
                times.remove(token)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The address a request came from: the TCP peer, unless the peer is a trusted proxy; then the
    X-Forwarded-For hops are walked from the nearest, skipping trusted proxies, to the first other one."""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    address = peer or "?"
    if not networks or not is_trusted(address) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        address = hop[:64]
        if not is_trusted(hop):
            break
    return address


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
    """``config``: the config file, or the campus PostgreSQL holds (dashboard/campus_state.py), which the dashboard uses."""
    if user.role == "admin":
        return Scope(None, None, None, user.person_id)
    if user.role == "faculty":
        courses = frozenset(c.id for c in config.courses if user.person_id in c.faculty)
        rooms = frozenset(t.room for t in config.timetable if t.course in courses)
        cameras = frozenset(c.id for c in config.cameras if c.room in rooms)
        return Scope(courses, rooms, cameras, user.person_id)
    return Scope(frozenset(), frozenset(), frozenset(), user.person_id)


def timetable_windows(config, courses: frozenset[str] | None, at: dt.datetime) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """Rooms where one of ``courses`` (None: any) has a timetable slot at ``at`` (aware), with the slot's
    window: from its start less the course's early arrival, to its end."""
    zone = ZoneInfo(config.site.timezone)
    local = at.astimezone(zone)
    early = {c.id: c.policy.early_arrival_min for c in config.courses}
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
    out: dict[str, tuple[dt.datetime, dt.datetime]] = {}
    for entry in config.timetable:
        if courses is not None and entry.course not in courses:
            continue
        if entry.weekday != weekday and entry.date != local.date():
            continue
        start = dt.datetime.combine(local.date(), entry.start, zone) - dt.timedelta(minutes=early.get(entry.course, 0))
        end = dt.datetime.combine(local.date(), entry.end, zone)
        if start <= at <= end:
            since, until = out.get(entry.room, (start, end))
            out[entry.room] = (min(since, start), max(until, end))
    return out


def timetable_intervals(config, room: str, start: dt.datetime, end: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(course, start, end) of every timetable slot in ``room`` overlapping [start, end] (aware times)."""
    zone = ZoneInfo(config.site.timezone)
    out = []
    day = start.astimezone(zone).date() - dt.timedelta(days=1)
    while day <= end.astimezone(zone).date():
        weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day.weekday()]
        for entry in config.timetable:
            if entry.room == room and (entry.weekday == weekday or entry.date == day):
                slot = (dt.datetime.combine(day, entry.start, zone), dt.datetime.combine(day, entry.end, zone))
                if slot[0] < end and slot[1] > start:
                    out.append((entry.course, *slot))
        day += dt.timedelta(days=1)
    return out


def course_rooms(config, course_id: str) -> frozenset[str]:
    """The rooms a course's timetable puts it in."""
    return frozenset(t.room for t in config.timetable if t.course == course_id)
