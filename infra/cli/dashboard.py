"""`rollcall` commands of the dashboard package (added to the root group by infra.cli.main): `dashboard
serve`, `user add`; and `demo`, the whole system with its dashboard."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import asyncpg
import click
import uvicorn

from dashboard.app import app_from_config
from dashboard.auth import check_password_strength, create_user
from infra.cli.support import config_of as _config
from infra.cli.types import PORT
from infra.demo import run_demo
from infra.foundation.db import describe_unreachable
from infra.foundation.endpoints import resolve
from infra.foundation.errors import RollcallError


# --- dashboard -----------------------------------------------------------------------------------

@click.group()
def dashboard() -> None:
    """The live dashboard (Starlette)."""


@dashboard.command("serve")
@click.option("--host", help="Address to listen on (default: [dashboard] host).")
@click.option("--port", type=PORT, help="Port (default: [dashboard] port; 0 = a free one).")
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, verbose: bool) -> None:
    """Serve the dashboard until interrupted (Ctrl-C stops it cleanly)."""
    config = _config(ctx)
    host = host or config.dashboard.host
    port = config.dashboard.port if port is None else port
    if not 0 <= port <= 65535:
        raise RollcallError(f"--port {port}: use 0..65535")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = app_from_config(config)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise RollcallError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port "
                            "or stop what uses it") from None
    bound = sock.getsockname()[1]
    click.echo(f"dashboard on http://{host}:{bound}/", err=True)
    # proxy_headers off: uvicorn would believe X-Forwarded-For from any local peer; the dashboard reads it
    # itself, only from [dashboard] trusted_proxies (the login rate limit counts per client address)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose,
                                           timeout_graceful_shutdown=3, lifespan="on", proxy_headers=False))
    server.run(sockets=[sock])


# --- users ---------------------------------------------------------------------------------------

@click.group()
def user() -> None:
    """Dashboard accounts."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "faculty", "student"]), default="admin", show_default=True)
@click.option("--person", "person_id", help="The person id a faculty or student account belongs to.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--replace", is_flag=True, help="Set a new password (and role) for an existing account.")
@click.pass_context
def user_add(ctx: click.Context, username: str, role: str, person_id: str | None, password_stdin: bool,
             replace: bool) -> None:
    """Add a dashboard account (`rollcall user add admin` makes the first admin); asks for the password."""

    config = _config(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    problem = check_password_strength(password, username)
    if problem:
        raise RollcallError(problem)
    database_url = resolve(config, need=("database",)).database_url

    async def main():
        try:
            conn = await asyncpg.connect(database_url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise describe_unreachable(database_url, exc) from None
        try:
            return await create_user(conn, username, password, role, person_id, created_by="cli", replace=replace)
        finally:
            await conn.close()

    made = asyncio.run(main())
    click.echo(f"user {made.username} ({made.role}{', person ' + made.person_id if made.person_id else ''}) "
               f"{'updated' if replace else 'added'}")


# --- demo ----------------------------------------------------------------------------------------

@click.command()
@click.option("--port", type=PORT, default=None, help="Dashboard port (default: [dashboard] port).")
@click.option("--metrics-port", type=PORT, default=9108, show_default=True, help="The processor's /metrics port.")
@click.pass_context
def demo(ctx: click.Context, port: int | None, metrics_port: int) -> None:
    """The whole system on the demo scenario: stack, enrolment, processor, attendance writer, dashboard.

    Prints the dashboard URL and demo logins; Ctrl-C stops every process it started.
    """

    run_demo(_config(ctx), ctx.find_root().obj.get("config_path"), port=port, metrics_port=metrics_port,
             say=lambda line: click.echo(line, err=True), show=click.echo)


COMMANDS = (dashboard, user, demo)
