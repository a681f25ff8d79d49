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
