"""Schema migrations on a real PostgreSQL: they apply, a second run changes nothing, and the
configured topology loads (and reloads) into the tables."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.foundation import db
from infra.foundation.errors import RollcallError
from infra.foundation.config import EXAMPLE_CONFIG, config_from_dict, load_config

TABLES = {"person", "face_enrolment", "room", "camera", "door", "course", "course_member",
          "timetable_slot", "class_session", "attendance", "consumer_offset", "audit_log"}


async def _schema(url: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY table_name, ordinal_position""")
        schema: dict[str, list[tuple]] = {}
        for row in rows:
            schema.setdefault(row["table_name"], []).append(tuple(row.values()))
        schema["_migrations"] = [tuple(r.values()) for r in await conn.fetch(
            "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]
        return schema
    finally:
        await conn.close()


def test_migrations_apply_twice_without_change(fresh_database):
    first = db.migrate(fresh_database)
    assert first.applied and not first.already
    before = asyncio.run(_schema(fresh_database))
    assert TABLES <= set(before)
    second = db.migrate(fresh_database)
    assert second.applied == [] and second.already == first.applied
    assert asyncio.run(_schema(fresh_database)) == before
    assert all(applied for _, applied in db.migration_status(fresh_database))


def test_topology_loads_and_reloads(fresh_database):
    db.migrate(fresh_database)
    config = load_config(EXAMPLE_CONFIG, environ={})
    counts = asyncio.run(db.load_topology(fresh_database, config))
    assert counts["camera"] == len(config.cameras) and counts["door"] == len(config.doors)
    assert counts["timetable_slot"] == len(config.timetable)
    assert counts["course_member"] == sum(len(c.roster) + len(c.faculty) for c in config.courses)
    # The config is the source of truth: a camera and a slot removed from it leave the database too.
    raw = config.model_dump(mode="json", exclude={"source"})
    raw["cameras"] = raw["cameras"][:2]
    raw["timetable"] = raw["timetable"][:1]
    smaller = config_from_dict(raw, environ={})
    counts = asyncio.run(db.load_topology(fresh_database, smaller))
    assert counts["timetable_slot"] == 1
    # load twice: same result (idempotent)
    assert asyncio.run(db.load_topology(fresh_database, smaller)) == counts


def test_unreachable_database_is_one_clear_line(free_port):
    url = f"postgresql://rollcall@127.0.0.1:{free_port}/rollcall"
    with pytest.raises(RollcallError) as caught:
        db.migrate(url)
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{free_port}" in message and "DATABASE_URL" in message
    with pytest.raises(RollcallError, match="cannot reach PostgreSQL"):
        asyncio.run(db.load_topology(url, load_config(EXAMPLE_CONFIG, environ={})))


def test_import_dry_run_prints_differences_and_writes_nothing(fresh_database):
    """The import compares on natural keys: a dry run lists a changed room, a new slot and a removed camera
    and writes nothing; the real import applies them; rows only in the database are kept unless pruned."""
    db.migrate(fresh_database)
    config = load_config(EXAMPLE_CONFIG, environ={})
    asyncio.run(db.load_topology(fresh_database, config))
    diff, _ = asyncio.run(db.import_config(fresh_database, config, prune=False, dry_run=True))
    assert diff.empty and diff.lines() == []

    raw = config.model_dump(mode="json", exclude={"source"})
    raw["rooms"][0]["name"] = "Renamed hall"
    dropped = raw["cameras"].pop()["id"]
    raw["doors"] = [d for d in raw["doors"] if dropped not in (d["door_camera"], d["room_camera"])]
    extra = dict(raw["timetable"][0], start="06:00:00", end="06:30:00")
    raw["timetable"].append(extra)
    changed = config_from_dict(raw, environ={})

    async def snapshot():
        conn = await asyncpg.connect(fresh_database)
        try:
            return [tuple(r) for t in ("room", "camera", "door", "timetable_slot")
                    for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1")]
        finally:
            await conn.close()

    before = asyncio.run(snapshot())
    diff, _ = asyncio.run(db.import_config(fresh_database, changed, prune=True, dry_run=True))
    lines = diff.lines()
    assert f"~ room {raw['rooms'][0]['id']}" in lines and f"- camera {dropped}" in lines
    assert any(line.startswith("+ timetable entry") and "06:00:00" in line for line in lines)
    assert asyncio.run(snapshot()) == before  # the dry run wrote nothing

    # without --prune the camera only in the database is kept, and said so
    diff, counts = asyncio.run(db.import_config(fresh_database, changed, prune=False, dry_run=False))
    assert diff.tables["camera"].kept == [(dropped,)] and counts["camera"] == len(config.cameras)
    assert counts["timetable_slot"] == len(config.timetable) + 1
    diff, counts = asyncio.run(db.import_config(fresh_database, changed, prune=True, dry_run=False))
    assert diff.tables["camera"].removed == [(dropped,)] and counts["camera"] == len(config.cameras) - 1
    again, _ = asyncio.run(db.import_config(fresh_database, changed, prune=True, dry_run=True))
    assert again.empty  # converged


def test_drop_database_ends_a_session_left_open_on_it(stack, fresh_database):
    """A run's database goes also while a connection is still open on it (a killed writer's); dropping one
    that is gone already is no error."""
    name = fresh_database.rpartition("/")[2]

    async def main():
        left_open = await asyncpg.connect(fresh_database)
        await db.drop_database(stack.database_url, name, within_s=20)
        admin = await asyncpg.connect(stack.database_url)
        try:
            exists = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        finally:
            await admin.close()
        with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
            await left_open.fetchval("SELECT 1")  # ended by the drop
        await db.drop_database(stack.database_url, name, within_s=5)  # gone already: nothing to do
        return exists

    assert asyncio.run(main()) == 0
