"""The campus as PostgreSQL holds it now, read for what a user may see (faculty scope: the courses the
roster lists them as faculty of, those courses' rooms by the timetable, those rooms' cameras) and for the
timetable checks of the live pages and of opening a session by hand.

PostgreSQL holds the campus: an admin edits it in the dashboard and `rollcall db load-config` imports the
TOML file into it. The snapshot has the attributes :mod:`dashboard.auth`'s scope and timetable functions
read from a config (``courses[].faculty``, ``courses[].policy.early_arrival_min``, ``timetable[]``,
``rooms[]``, ``cameras[]``, ``site.timezone``), so they work on either. The health, live and video pages
list its cameras (and draw its doors' entry zones), so a camera added in the dashboard shows there. :class:`CampusCache` keeps one
for a few seconds (every request needs it); a dashboard edit that changes scope drops it at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CAMPUS_CACHE_S = 5.0


@dataclass(frozen=True)
class Policy:
    early_arrival_min: int


@dataclass(frozen=True)
class Course:
    id: str
    name: str
    faculty: frozenset[str]
    policy: Policy


@dataclass(frozen=True)
class Room:
    id: str
    name: str


@dataclass(frozen=True)
class Camera:
    id: str
    name: str
    role: str
    room: str
    enabled: bool
    url: str  # as stored: credentials in it (redact before showing), embedded:<mount> unresolved


@dataclass(frozen=True)
class Door:
    """What the live video draws of a door: its entry zone on its room camera's picture."""
    id: str
    room_camera: str
    entry_zone: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Slot:
    course: str
    room: str
    weekday: str | None
    date: dt.date | None
    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class Campus:
    site: Any  # the config's site section (name, time zone)
    courses: tuple[Course, ...]
    rooms: tuple[Room, ...]
    cameras: tuple[Camera, ...]
    timetable: tuple[Slot, ...]
    doors: tuple[Door, ...] = ()


async def load_campus(conn, site) -> Campus:
    """The campus tables in one read-only snapshot (one transaction: consistent with each other)."""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        faculty: dict[str, set[str]] = {}
        for r in await conn.fetch("SELECT course_id, person_id FROM course_member WHERE role = 'faculty'"):
            faculty.setdefault(r["course_id"], set()).add(r["person_id"])
        courses = tuple(Course(r["id"], r["name"], frozenset(faculty.get(r["id"], ())), Policy(r["early_arrival_min"]))
                        for r in await conn.fetch("SELECT id, name, early_arrival_min FROM course ORDER BY id"))
        rooms = tuple(Room(r["id"], r["name"]) for r in await conn.fetch("SELECT id, name FROM room ORDER BY id"))
        cameras = tuple(Camera(r["id"], r["name"], r["role"], r["room_id"], r["enabled"], r["url"])
                        for r in await conn.fetch("SELECT id, name, role, room_id, enabled, url FROM camera ORDER BY id"))
        doors = tuple(Door(r["id"], r["room_camera_id"], tuple(tuple(p) for p in json.loads(r["entry_zone"])))
                      for r in await conn.fetch("SELECT id, room_camera_id, entry_zone FROM door ORDER BY id"))
        timetable = tuple(
            Slot(r["course_id"], r["room_id"], WEEKDAYS[r["weekday"] - 1] if r["weekday"] else None, r["on_date"],
                 r["start_time"], r["end_time"])
            for r in await conn.fetch("""SELECT course_id, room_id, weekday, on_date, start_time, end_time
                                         FROM timetable_slot ORDER BY id"""))
    return Campus(site, courses, rooms, cameras, timetable, doors)


class CampusCache:
    """One snapshot, read again after ``max_age_s`` or :meth:`forget` (one reader at a time)."""

    def __init__(self, max_age_s: float = CAMPUS_CACHE_S):
        self.max_age_s = max_age_s
        self._campus: Campus | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, connect, site) -> Campus:
        """The snapshot; ``connect()`` is an async context manager giving a connection when it must be read."""
        if self._campus is not None and time.monotonic() - self._at < self.max_age_s:
            return self._campus
        async with self._lock:
            if self._campus is None or time.monotonic() - self._at >= self.max_age_s:
                async with connect() as conn:
                    self._campus = await load_campus(conn, site)
                self._at = time.monotonic()
        return self._campus

    def forget(self) -> None:
        self._at = 0.0
