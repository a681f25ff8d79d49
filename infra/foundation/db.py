"""Database schema migrations (yoyo-migrations, plain SQL files in infra/foundation/migrations) and the loading
of the configured campus topology (rooms, cameras, doors, courses, timetable) into PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from infra.foundation import topology
from infra.foundation.errors import RollcallError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def redact(url: str) -> str:
    """A database URL fit for a log line: the password replaced."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def describe_unreachable(url: str, exc: BaseException) -> RollcallError:
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RollcallError(
        f"cannot reach PostgreSQL at {where} ({reason}); start it (`rollcall up` for the embedded one) "
        f"or point DATABASE_URL at a running server (now {redact(url)})"
    )


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]  # applied by this call
    already: list[str]  # applied before


def migrate(database_url: str) -> MigrationReport:
    """Apply every pending migration, under yoyo's lock so two callers cannot race."""
    from yoyo import read_migrations

    backend = _backend(database_url)
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            pending_ids = [m.id for m in pending]
            backend.apply_migrations(pending)
    except Exception as exc:  # yoyo wraps driver errors in its own types
        raise RollcallError(f"migration failed on {redact(database_url)}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        backend.connection.close()
    return MigrationReport(applied=pending_ids, already=[m.id for m in migrations if m.id not in pending_ids])


def migration_status(database_url: str) -> list[tuple[str, bool]]:
    from yoyo import read_migrations

    backend = _backend(database_url)
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        return [(m.id, backend.is_applied(m)) for m in migrations]
    finally:
        backend.connection.close()


def _backend(database_url: str):
    from yoyo import get_backend

    # yoyo picks its driver from the scheme: psycopg 3 (no psycopg2 build needed).
    yoyo_url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", database_url)
    try:
        return get_backend(yoyo_url, migration_table="_yoyo_migration")
    except Exception as exc:
        raise describe_unreachable(database_url, exc) from None


async def load_topology(database_url: str, config, *, prune: bool = True) -> dict[str, int]:
    """Import the configured campus (:mod:`infra.foundation.topology`) and count each table's rows.

    ``prune`` (the default here, for the tools that own their database: tests, scenario runs, benchmarks,
    the demo): cameras, doors, and the roster and timetable entries of the file's courses that the file does
    not name are removed, so a reload converges. `rollcall db load-config` and `rollcall up` keep them
    unless told (``--prune``): the dashboard edits the same tables.
    """
    _, counts = await import_config(database_url, config, prune=prune, dry_run=False)
    return counts


async def import_config(database_url: str, config, *, prune: bool, dry_run: bool
                        ) -> tuple[topology.TopologyDiff, dict[str, int]]:
    """The file's differences from the database, applied in one transaction unless ``dry_run``; the row
    counts after."""
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise describe_unreachable(database_url, exc) from None
    try:
        diff = await topology.import_topology(conn, config, prune=prune, dry_run=dry_run)
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in topology.TABLES}
    finally:
        await conn.close()
    return diff, counts


async def drop_database(server_url: str, name: str, *, within_s: float = 60.0) -> None:
    """DROP DATABASE ``name`` (if it exists) on the server of ``server_url`` (a URL of another database there),
    also while a connection is left open on it (a killed writer): ``WITH (FORCE)`` ends those. FORCE refuses
    to end a process of another role, such as an autovacuum worker (it starts on a table just filled with
    many rows): a plain DROP then cancels the worker itself. Both wait at most 5 s for the sessions they end,
    which a loaded machine can miss: retried for ``within_s``, then the last error is raised."""
    force = True
    async for attempt in AsyncRetrying(stop=stop_after_delay(within_s), wait=wait_exponential(multiplier=0.5, max=5),
                                       retry=retry_if_exception_type((OSError, asyncpg.PostgresError,
                                                                      asyncio.TimeoutError)), reraise=True):
        with attempt:
            conn = await asyncpg.connect(server_url, timeout=10)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if force else ""))
            except asyncpg.InsufficientPrivilegeError:
                force = False  # an autovacuum worker (see above): the next attempt drops without FORCE
                raise
            except asyncpg.ObjectInUseError:
                force = True  # a session of ours without FORCE: the next attempt ends it
                raise
            finally:
                await conn.close()
