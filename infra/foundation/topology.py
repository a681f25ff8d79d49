"""The campus in the TOML file compared with the campus in PostgreSQL, and the import of the differences.

PostgreSQL holds the campus (the dashboard edits it too); `rollcall db load-config` imports the file into
it. Each table is compared on its natural key (rooms, cameras, doors, courses by id; roster entries by
(course, person); timetable entries by (course, room, weekday or date, start)): a key only in the file is
*added*, a key in both with other values is *changed*, a key only in the database is *removed* when the
import prunes, else *kept* (what an admin added in the dashboard stays unless asked, `--prune`).

What pruning may remove is what the file is authoritative for: cameras and doors it does not name, and
the roster and timetable entries of the courses it names. Rooms and courses are never removed by an import
(removing a course deletes its attendance): they are listed as kept.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import asyncpg

from infra.foundation.errors import RollcallError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TABLES = ("room", "camera", "door", "course", "course_member", "timetable_slot")
TITLES = {"room": "rooms", "camera": "cameras", "door": "doors", "course": "courses",
          "course_member": "roster entries", "timetable_slot": "timetable entries"}
_HOW_REMOVED = {"room": "an import never removes rooms", "course": "an import never removes courses",
                "camera": "--prune removes them", "door": "--prune removes them",
                "course_member": "--prune removes those of the file's courses",
                "timetable_slot": "--prune removes those of the file's courses"}
Rows = dict[str, dict[tuple, tuple]]  # table -> natural key -> the compared values


def _real(value: float | None) -> float | None:
    """A float as a PostgreSQL ``real`` holds it (4 bytes): 0.3 in the file and 0.3 read back compare equal."""
    return None if value is None else round(float(value), 4)


def _zone(points) -> str:
    return json.dumps([[_real(x), _real(y)] for x, y in points])


def file_rows(config) -> Rows:
    """What the file says, keyed and valued as :func:`database_rows` reads the tables."""
    tz = config.site.timezone
    return {
        "room": {(r.id,): (r.name, r.capacity) for r in config.rooms},
        "camera": {(c.id,): (c.name, c.role, c.room, c.url, _real(c.analysis_fps), c.enabled,
                             _real(c.min_tracking_fps)) for c in config.cameras},
        "door": {(d.id,): (d.room, d.door_camera, d.room_camera, _zone(d.entry_zone), _real(d.transit.min_s),
                           _real(d.transit.max_s)) for d in config.doors},
        "course": {(c.id,): (c.name, c.policy.early_arrival_min, c.policy.late_after_min,
                             c.policy.present_min_minutes, c.policy.left_early_min, c.policy.door_only)
                   for c in config.courses},
        "course_member": {**{(c.id, p): ("student",) for c in config.courses for p in c.roster},
                          **{(c.id, p): ("faculty",) for c in config.courses for p in c.faculty}},
        "timetable_slot": {(t.course, t.room, t.weekday or t.date.isoformat(), t.start.strftime("%H:%M:%S")):
                           (t.end.strftime("%H:%M:%S"), tz) for t in config.timetable},
    }


async def database_rows(conn) -> Rows:
    rows: Rows = {}
    rows["room"] = {(r["id"],): (r["name"], r["capacity"]) for r in await conn.fetch("SELECT * FROM room")}
    rows["camera"] = {(r["id"],): (r["name"], r["role"], r["room_id"], r["url"], _real(r["analysis_fps"]),
                                   r["enabled"], _real(r["min_tracking_fps"]))
                      for r in await conn.fetch("SELECT * FROM camera")}
    rows["door"] = {(r["id"],): (r["room_id"], r["door_camera_id"], r["room_camera_id"],
                                 _zone(json.loads(r["entry_zone"])), _real(r["transit_min_s"]),
                                 _real(r["transit_max_s"])) for r in await conn.fetch("SELECT * FROM door")}
    rows["course"] = {(r["id"],): (r["name"], r["early_arrival_min"], r["late_after_min"], r["present_min_minutes"],
                                   r["left_early_min"], r["door_only"]) for r in await conn.fetch("SELECT * FROM course")}
    rows["course_member"] = {(r["course_id"], r["person_id"]): (r["role"],)
                             for r in await conn.fetch("SELECT * FROM course_member")}
    rows["timetable_slot"] = {
        (r["course_id"], r["room_id"], WEEKDAYS[r["weekday"] - 1] if r["weekday"] else r["on_date"].isoformat(),
         r["start_time"].strftime("%H:%M:%S")): (r["end_time"].strftime("%H:%M:%S"), r["timezone"])
        for r in await conn.fetch("SELECT * FROM timetable_slot")}
    return rows


@dataclass
class TableDiff:
    added: list[tuple] = field(default_factory=list)
    changed: list[tuple] = field(default_factory=list)
    removed: list[tuple] = field(default_factory=list)
    kept: list[tuple] = field(default_factory=list)  # only in the database, left there


@dataclass
class TopologyDiff:
    tables: dict[str, TableDiff]
    prune: bool

    @property
    def empty(self) -> bool:
        return not any(t.added or t.changed or t.removed for t in self.tables.values())

    def lines(self) -> list[str]:
        """The differences, one line each: ``+`` added, ``~`` changed, ``-`` removed, ``=`` kept."""
        out = []
        for table, d in self.tables.items():
            for mark, keys in (("+", d.added), ("~", d.changed), ("-", d.removed)):
                out += [f"{mark} {TITLES[table][:-1] if not table.endswith('_slot') else 'timetable entry'} "
                        f"{' '.join(map(str, key))}" for key in keys]
            if d.kept:
                out.append(f"= {len(d.kept)} {TITLES[table]} only in the database, kept ({_HOW_REMOVED[table]}): "
                           + ", ".join(" ".join(map(str, k)) for k in d.kept[:5]) + (" ..." if len(d.kept) > 5 else ""))
        return out

    def summary(self) -> str:
        return "; ".join(f"{TITLES[t]}: +{len(d.added)} ~{len(d.changed)} -{len(d.removed)}"
                         for t, d in self.tables.items())


def diff_rows(database: Rows, wanted: Rows, *, prune: bool, file_courses: set[str]) -> TopologyDiff:
    """The differences from ``database`` to ``wanted`` (pure). See the module's doc for what prune removes."""
    tables = {}
    for table in TABLES:
        have, want = database.get(table, {}), wanted.get(table, {})
        d = TableDiff(added=sorted(k for k in want if k not in have),
                      changed=sorted(k for k in want if k in have and have[k] != want[k]))
        for key in sorted(k for k in have if k not in want):
            removable = table in ("camera", "door") or (table in ("course_member", "timetable_slot")
                                                       and key[0] in file_courses)
            (d.removed if prune and removable else d.kept).append(key)
        tables[table] = d
    return TopologyDiff(tables=tables, prune=prune)


async def import_topology(conn, config, *, prune: bool, dry_run: bool) -> TopologyDiff:
    """Compare the file with the database; unless ``dry_run``, apply the differences in one transaction
    (the tables locked against a concurrent import or dashboard edit while it runs). A removal that would
    leave a row pointing at nothing (a camera an admin's door still uses) fails the whole import."""
    try:
        async with conn.transaction():
            if not dry_run:
                await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")
            diff = diff_rows(await database_rows(conn), file_rows(config), prune=prune,
                             file_courses={c.id for c in config.courses})
            if not dry_run:
                await _apply(conn, config, diff)
    except asyncpg.ForeignKeyViolationError as exc:
        raise RollcallError(f"the import would leave a dangling reference, nothing was written: {exc.detail or exc}; "
                            "keep the row in the file, or first edit the row that uses it") from None
    return diff


async def _apply(conn, config, diff: TopologyDiff) -> None:
    """Upsert what the file names (only rows that differ change: ``updated_at`` stays on the others), then
    remove what the diff removes, children first."""
    await _upsert_places(conn, config, diff)
    await _upsert_courses(conn, config, diff)
    await _upsert_timetable(conn, config, diff)
    t = diff.tables
    await conn.executemany(
        """DELETE FROM timetable_slot WHERE course_id = $1 AND room_id = $2 AND start_time = $4::time
           AND (weekday = $3::smallint OR on_date::text = $5)""",
        [(course, room, WEEKDAYS.index(day) + 1 if day in WEEKDAYS else None, dt.time.fromisoformat(start), day)
         for course, room, day, start in t["timetable_slot"].removed])
    await conn.executemany("DELETE FROM course_member WHERE course_id = $1 AND person_id = $2",
                           t["course_member"].removed)
    await conn.execute("DELETE FROM door WHERE id = ANY($1::text[])", [k[0] for k in t["door"].removed])
    await conn.execute("DELETE FROM camera WHERE id = ANY($1::text[])", [k[0] for k in t["camera"].removed])


def _touched(diff: TopologyDiff, table: str) -> set[tuple]:
    return set(diff.tables[table].added) | set(diff.tables[table].changed)


async def _upsert_places(conn, config, diff: TopologyDiff) -> None:
    rooms, cameras, doors = _touched(diff, "room"), _touched(diff, "camera"), _touched(diff, "door")
    await conn.executemany(
        """INSERT INTO room (id, name, capacity) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, capacity = EXCLUDED.capacity, updated_at = now()""",
        [(r.id, r.name, r.capacity) for r in config.rooms if (r.id,) in rooms])
    await conn.executemany(
        """INSERT INTO camera (id, name, role, room_id, url, analysis_fps, enabled, min_tracking_fps)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
           room_id = EXCLUDED.room_id, url = EXCLUDED.url, analysis_fps = EXCLUDED.analysis_fps,
           enabled = EXCLUDED.enabled, min_tracking_fps = EXCLUDED.min_tracking_fps, updated_at = now()""",
        [(c.id, c.name, c.role, c.room, c.url, c.analysis_fps, c.enabled, c.min_tracking_fps)
         for c in config.cameras if (c.id,) in cameras])
    await conn.executemany(
        """INSERT INTO door (id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s, transit_max_s)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
           ON CONFLICT (id) DO UPDATE SET room_id = EXCLUDED.room_id,
           door_camera_id = EXCLUDED.door_camera_id, room_camera_id = EXCLUDED.room_camera_id,
           entry_zone = EXCLUDED.entry_zone, transit_min_s = EXCLUDED.transit_min_s,
           transit_max_s = EXCLUDED.transit_max_s, updated_at = now()""",
        [(d.id, d.room, d.door_camera, d.room_camera, json.dumps(d.entry_zone), d.transit.min_s, d.transit.max_s)
         for d in config.doors if (d.id,) in doors])


async def _upsert_courses(conn, config, diff: TopologyDiff) -> None:
    """Courses with their policies, placeholder people for roster names (until enrolled with a name), rosters."""
    courses, members = _touched(diff, "course"), _touched(diff, "course_member")
    await conn.executemany(
        """INSERT INTO course (id, name, early_arrival_min, late_after_min, present_min_minutes, left_early_min,
                             door_only)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
           early_arrival_min = EXCLUDED.early_arrival_min, late_after_min = EXCLUDED.late_after_min,
           present_min_minutes = EXCLUDED.present_min_minutes, left_early_min = EXCLUDED.left_early_min,
           door_only = EXCLUDED.door_only, updated_at = now()""",
        [(c.id, c.name, c.policy.early_arrival_min, c.policy.late_after_min, c.policy.present_min_minutes,
          c.policy.left_early_min, c.policy.door_only) for c in config.courses if (c.id,) in courses])
    wanted = file_rows(config)["course_member"]
    rows = [(course, person, wanted[(course, person)][0]) for course, person in sorted(members)]
    await conn.executemany("INSERT INTO person (id, display_name, kind) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING",
                           [(person, role) for _, person, role in rows])
    await conn.executemany(
        """INSERT INTO course_member (course_id, person_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (course_id, person_id) DO UPDATE SET role = EXCLUDED.role""", rows)


# The timetable's natural key is its unique index (course, room, weekday or date, start): an entry whose end
# or time zone changed is updated in place and keeps its id (its sessions keep pointing at it).
UPSERT_SLOT_SQL = """
INSERT INTO timetable_slot (course_id, room_id, weekday, on_date, start_time, end_time, timezone)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (course_id, room_id, coalesce(weekday, 0), coalesce(on_date, 'epoch'::date), start_time)
DO UPDATE SET end_time = EXCLUDED.end_time, timezone = EXCLUDED.timezone
"""


async def _upsert_timetable(conn, config, diff: TopologyDiff) -> None:
    slots = _touched(diff, "timetable_slot")
    await conn.executemany(UPSERT_SLOT_SQL, [
        (t.course, t.room, WEEKDAYS.index(t.weekday) + 1 if t.weekday else None, t.date, t.start, t.end,
         config.site.timezone) for t in config.timetable
        if (t.course, t.room, t.weekday or t.date.isoformat(), t.start.strftime("%H:%M:%S")) in slots])
