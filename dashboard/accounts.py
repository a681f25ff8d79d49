"""Dashboard accounts as admins manage them: the list, a new account (linked to a person; a faculty
account to the courses it teaches), a password reset, disabling and enabling, and the e-mail address of
the account's person (where consumers/reports.py sends their reports; none to a disabled account).

A new account and a reset get a random one-time password, shown once to the admin (never stored but as
its argon2id hash, never put in a cookie). A reset, disabling, or a change of courses take effect at once:
the account's sessions end (auth.py looks every session up on each request). Faculty scope is the roster
(``course_member`` rows with role faculty), so "the courses of a faculty account" are its person's
faculty rows. Every change is in the audit log under the admin's name.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from dashboard import auth
from infra.foundation.errors import RollcallError

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")  # name@host, no spaces (AccountForm uses email_address too)


async def accounts(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        """SELECT u.username, u.role, u.person_id, p.display_name, p.email, u.disabled, u.created_by,
                  to_char(u.created_at, 'YYYY-MM-DD HH24:MI') AS created, to_char(u.last_login_at, 'YYYY-MM-DD HH24:MI') AS last_login,
                  (SELECT array_agg(m.course_id ORDER BY m.course_id) FROM course_member m
                   WHERE m.person_id = u.person_id AND m.role = 'faculty') AS courses
           FROM dashboard_user u LEFT JOIN person p ON p.id = u.person_id ORDER BY u.username""")]


async def _audit(conn, actor: str, action: str, username: str, detail: dict | None = None) -> None:
    await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4::jsonb)",
                       actor, action, username, json.dumps(detail or {}))


async def _ensure_person(conn, person_id: str, name: str, kind: str) -> None:
    """The person an account links to: there already, or made now when a name is given."""
    exists = await conn.fetchval("SELECT 1 FROM person WHERE id = $1 AND pseudonymised_at IS NULL", person_id)
    if exists:
        return
    if not name:
        raise RollcallError(f"no person {person_id!r}: give a name to add them, or enrol them on the People page")
    await conn.execute("INSERT INTO person (id, display_name, kind) VALUES ($1, $2, $3)", person_id, name, kind)


async def set_faculty_courses(conn, username: str, courses: list[str], *, actor: str) -> list[str]:
    """Make the account's person faculty of exactly ``courses`` (roster rows as faculty, added or dropped)."""
    person_id = await conn.fetchval("SELECT person_id FROM dashboard_user WHERE username = $1 AND role = 'faculty'",
                                    username)
    if person_id is None:
        raise RollcallError(f"no faculty account {username!r}")
    known = {r["id"] for r in await conn.fetch("SELECT id FROM course WHERE id = ANY($1::text[])", courses)}
    unknown = sorted(set(courses) - known)
    if unknown:
        raise RollcallError(f"no course {', '.join(map(repr, unknown))}: add it on the Courses page first")
    async with conn.transaction():
        await conn.execute("""DELETE FROM course_member WHERE person_id = $1 AND role = 'faculty'
                              AND NOT course_id = ANY($2::text[])""", person_id, courses)
        await conn.executemany(
            """INSERT INTO course_member (course_id, person_id, role) VALUES ($1, $2, 'faculty')
               ON CONFLICT (course_id, person_id) DO UPDATE SET role = 'faculty'""",
            [(course, person_id) for course in sorted(known)])
        await _audit(conn, actor, "user.courses", username, {"courses": sorted(known)})
    return sorted(known)


async def create_account(conn, *, username: str, role: str, person_id: str, name: str, courses: list[str],
                         actor: str, email: str = "") -> str:
    """A new account (refused when the username is taken); returns its one-time password."""
    if role != "admin" and not person_id:
        raise RollcallError(f"a {role} account needs the person it belongs to (person id)")
    if role != "faculty" and courses:
        raise RollcallError("only a faculty account teaches courses")
    if await conn.fetchval("SELECT 1 FROM dashboard_user WHERE username = $1", username):
        raise RollcallError(f"user {username!r} exists already: reset its password in the list instead")
    password = auth.new_password()
    async with conn.transaction():
        if person_id:
            await _ensure_person(conn, person_id, name, "faculty" if role == "faculty" else "student")
            if email:  # where their e-mail reports go (consumers/reports.py)
                await conn.execute("UPDATE person SET email = $2, updated_at = now() WHERE id = $1", person_id, email)
        elif email:
            raise RollcallError("an e-mail address belongs to a person: give the person id too")
        await auth.create_user(conn, username, password, role, person_id or None, created_by=actor)
        if role == "faculty":
            await set_faculty_courses(conn, username, courses, actor=actor)
    return password


async def reset_password(conn, username: str, *, actor: str) -> tuple[str, int]:
    """A new one-time password for ``username`` (its sessions end); returns it and how many sessions ended."""
    password = auth.new_password()
    password_hash = await asyncio.to_thread(auth.hash_password, password)
    async with conn.transaction():
        status = await conn.execute("UPDATE dashboard_user SET password_hash = $2 WHERE username = $1",
                                    username, password_hash)
        if status.split()[-1] != "1":
            raise LookupError(username)
        ended = await auth.revoke_sessions(conn, username)
        await _audit(conn, actor, "user.reset", username, {"sessions_ended": ended})
    return password, ended


async def set_disabled(conn, username: str, disabled: bool, *, actor: str) -> int:
    """Disable (its sessions end at once) or enable an account; returns how many sessions ended."""
    async with conn.transaction():
        status = await conn.execute("UPDATE dashboard_user SET disabled = $2 WHERE username = $1", username, disabled)
        if status.split()[-1] != "1":
            raise LookupError(username)
        ended = await auth.revoke_sessions(conn, username) if disabled else 0
        await _audit(conn, actor, "user.disable" if disabled else "user.enable", username, {"sessions_ended": ended})
    return ended


def email_address(value: object) -> str:
    """``value`` as an e-mail address (stripped; "" for none), or a RollcallError (a 400) saying why not."""
    text = str(value or "").strip()
    if text and (len(text) > 254 or not EMAIL.match(text)):
        raise RollcallError(f"e-mail {text[:70]!r} is not an address (name@host)")
    return text


async def email_of(conn, person_id: str) -> str | None:
    return await conn.fetchval("SELECT email FROM person WHERE id = $1", person_id)


async def set_email(conn, username: str, email: str, *, actor: str) -> str:
    """The e-mail address of the account's person ("" removes it); returns the person's id. LookupError
    when there is no such account; RollcallError when the account has no person (an admin's may not)."""
    account = await conn.fetchrow("SELECT person_id FROM dashboard_user WHERE username = $1", username)
    if account is None:
        raise LookupError(username)
    if account["person_id"] is None:
        raise RollcallError(f"account {username!r} belongs to no person: an e-mail address belongs to a person")
    async with conn.transaction():
        await conn.execute("UPDATE person SET email = $2, updated_at = now() WHERE id = $1",
                           account["person_id"], email or None)
        await _audit(conn, actor, "user.email", username, {"email": email or None})
    return account["person_id"]
