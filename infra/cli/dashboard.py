"""`rollcall` commands of the dashboard package (registered by infra.cli.main): `dashboard serve`,
`user add`, `bench dashboard`, `demo`."""

from __future__ import annotations

import asyncio
import sys

import click

from infra.foundation.errors import RollcallError


from infra.cli.support import config_of as _config
from infra.cli.support import print_json
from infra.cli.types import PORT, FiniteFloat
from dashboard.app import app_from_config
from dashboard.auth import check_password_strength, create_user
from infra.foundation.endpoints import resolve
from infra.foundation.db import describe_unreachable
from infra.bench.dashboard import run_bench
from infra.demo import run_demo


def register(cli: click.Group) -> None:
    """Add this package's commands to the `rollcall` command group."""
    cli.add_command(dashboard)
    cli.add_command(user)
    cli.add_command(demo)
    bench = cli.commands.get("bench")
    if isinstance(bench, click.Group):
        bench.add_command(bench_dashboard)


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
    import logging
    import socket

    import uvicorn


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
        import asyncpg


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


# --- bench ---------------------------------------------------------------------------------------

@click.command("dashboard")
@click.option("--clients", default="200", show_default=True,
              help="Concurrent live-feed (SSE) clients; a comma list runs each in turn (e.g. 50,100,200,400).")
@click.option("--events", type=click.IntRange(10, 1_000_000), default=300, show_default=True,
              help="Events published per run.")
@click.option("--rate", type=FiniteFloat(0, 100_000, low_open=True), default=50.0, show_default=True,
              help="Events per second published.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (the last run's figures at the top).")
@click.pass_context
def bench_dashboard(ctx: click.Context, clients: str, events: int, rate: float, as_json: bool) -> None:
    """Live-feed fan-out: N SSE clients on one dashboard process, p95 delay from Kafka to each client."""

    try:
        counts = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        raise RollcallError(f"--clients {clients!r}: give a number or a comma list of numbers") from None
    if not counts or min(counts) < 1 or max(counts) > 5000:
        raise RollcallError("--clients: between 1 and 5000")
    if events < 10 or rate <= 0:
        raise RollcallError("--events at least 10 and --rate above 0")
    report = run_bench(_config(ctx), counts, events=events, rate=rate,
                       progress=None if as_json else (lambda line: click.echo(line, err=True)))
    if as_json:
        print_json(report)
        return
    for run in report["runs"]:
        click.echo(f"{run['clients']:>5} clients: p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, max {run['max_ms']} ms; "
                   f"{run['delivered']}/{run['expected']} deliveries, {run['connected']} connected")
    click.echo(f"serves {report['clients']} concurrent live-feed clients with p95 {report['p95_ms']} ms "
               f"(aim: {report['aim']['clients']} clients under {report['aim']['p95_ms']} ms: "
               f"{'met' if report['aim_met'] else 'not met'})")


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
