"""Database schema migrations (yoyo-migrations, plain SQL files in infra/foundation/migrations) and the loading
of the configured campus topology (rooms, cameras, doors, courses, timetable) into PostgreSQL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from infra.foundation.errors import RollcallError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WEEKDAY_NUMBER = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


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


async def load_topology(database_url: str, config) -> dict[str, int]:
    """Upsert the configured rooms, cameras, doors, courses, rosters and timetable slots.

    The config file is the source of truth for the topology: rows it no longer names are removed
    (cameras, doors, slots), so a reload converges. People named only in a roster get a placeholder
    person row until they are enrolled with a name.
    """
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise describe_unreachable(database_url, exc) from None
    counts: dict[str, int] = {}
    try:
        async with conn.transaction():
            await _upsert_places(conn, config)
            await _upsert_courses(conn, config)
            await _replace_timetable(conn, config)
        for table in ("room", "camera", "door", "course", "course_member", "timetable_slot"):
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()
    return counts


async def _upsert_places(conn, config) -> None:
    """Rooms, cameras and doors as configured; cameras and doors the config no longer names are removed."""
    await conn.executemany(
        """INSERT INTO room (id, name, capacity) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, capacity = EXCLUDED.capacity,
           updated_at = now()""",
        [(r.id, r.name, r.capacity) for r in config.rooms])
    await conn.executemany(
        """INSERT INTO camera (id, name, role, room_id, url, analysis_fps, enabled, min_tracking_fps)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
           room_id = EXCLUDED.room_id, url = EXCLUDED.url, analysis_fps = EXCLUDED.analysis_fps,
           enabled = EXCLUDED.enabled, min_tracking_fps = EXCLUDED.min_tracking_fps, updated_at = now()""",
        [(c.id, c.name, c.role, c.room, c.url, c.analysis_fps, c.enabled, c.min_tracking_fps)
         for c in config.cameras])
    await conn.executemany(
        """INSERT INTO door (id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s, transit_max_s)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
           ON CONFLICT (id) DO UPDATE SET room_id = EXCLUDED.room_id,
           door_camera_id = EXCLUDED.door_camera_id, room_camera_id = EXCLUDED.room_camera_id,
           entry_zone = EXCLUDED.entry_zone, transit_min_s = EXCLUDED.transit_min_s,
           transit_max_s = EXCLUDED.transit_max_s, updated_at = now()""",
        [(d.id, d.room, d.door_camera, d.room_camera, json.dumps(d.entry_zone),
          d.transit.min_s, d.transit.max_s) for d in config.doors])
    await conn.execute("DELETE FROM door WHERE NOT (id = ANY($1::text[]))", [d.id for d in config.doors])
    await conn.execute("DELETE FROM camera WHERE NOT (id = ANY($1::text[]))", [c.id for c in config.cameras])


async def _upsert_courses(conn, config) -> None:
    """Courses with their policies, placeholder people for roster names, and the rosters themselves."""
    await conn.executemany(
        """INSERT INTO course (id, name, early_arrival_min, late_after_min, present_min_minutes, left_early_min,
                             door_only)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
           early_arrival_min = EXCLUDED.early_arrival_min, late_after_min = EXCLUDED.late_after_min,
           present_min_minutes = EXCLUDED.present_min_minutes, left_early_min = EXCLUDED.left_early_min,
           door_only = EXCLUDED.door_only, updated_at = now()""",
        [(c.id, c.name, c.policy.early_arrival_min, c.policy.late_after_min,
          c.policy.present_min_minutes, c.policy.left_early_min, c.policy.door_only) for c in config.courses])
    members = [(c.id, p, "student") for c in config.courses for p in c.roster]
    members += [(c.id, p, "faculty") for c in config.courses for p in c.faculty]
    await conn.executemany(
        """INSERT INTO person (id, display_name, kind) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING""",
        [(p, role) for _, p, role in members])
    await conn.execute("DELETE FROM course_member WHERE course_id = ANY($1::text[])",
                       [c.id for c in config.courses])
    await conn.executemany(
        "INSERT INTO course_member (course_id, person_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        members)


async def _replace_timetable(conn, config) -> None:
    """The timetable slots, replaced as a whole (a slot has no id of its own in the config)."""
    await conn.execute("DELETE FROM timetable_slot")
    await conn.executemany(
        """INSERT INTO timetable_slot (course_id, room_id, weekday, on_date, start_time, end_time, timezone)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(t.course, t.room, WEEKDAY_NUMBER[t.weekday] if t.weekday else None, t.date, t.start, t.end,
          config.site.timezone) for t in config.timetable])
