"""`rollcall user add` and `rollcall bench dashboard`: accounts from the command line, bad input in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from infra.foundation.paths import PROJECT_ROOT
from infra.foundation import db


def _rollcall(args, env, stdin=""):
    return subprocess.run([sys.executable, "-m", "infra.cli.main", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=120)


def test_user_add_makes_the_first_admin(stack, fresh_database, stack_dir):
    import asyncpg


    db.migrate(fresh_database)
    env = {**os.environ, "DATABASE_URL": fresh_database, "ROLLCALL_STACK_DIR": str(stack_dir)}
    made = _rollcall(["user", "add", "root", "--password-stdin"], env, "a-long-password\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "user root (admin) added"
    for args, stdin, message in (
            (["user", "add", "root", "--password-stdin"], "a-long-password\n", "exists already: pass --replace"),
            (["user", "add", "bob", "--password-stdin"], "short\n", "too short"),
            (["user", "add", "kid", "--role", "student", "--password-stdin"], "a-long-password\n", "needs --person"),
            (["user", "add", "kid", "--role", "student", "--person", "ghost", "--password-stdin"], "a-long-password\n",
             "no person 'ghost'"),
            (["bench", "dashboard", "--clients", "many"], "", "give a number")):
        result = _rollcall(args, env, stdin)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert _rollcall(["user", "add", "root", "--replace", "--password-stdin"], env, "another-password\n").returncode == 0

    async def stored():
        conn = await asyncpg.connect(fresh_database)
        try:
            return await conn.fetch("SELECT username, role, password_hash FROM dashboard_user")
        finally:
            await conn.close()

    rows = asyncio.run(stored())
    assert [(r["username"], r["role"]) for r in rows] == [("root", "admin")]
    assert rows[0]["password_hash"].startswith("$argon2id$")
