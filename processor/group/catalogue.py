"""The cameras a processor group runs: PostgreSQL's ``camera`` and ``door`` tables (filled by
`rollcall db load-config`, or edited in the dashboard), read every ``cameras_poll_s``; each camera's slot.
A processor outside a group (`rollcall run`) follows the same tables with no slots (``slot_count`` 0).

A camera gets a slot the first time a member sees it without one: the least used slot (lowest number
first), under a transaction-scoped advisory lock so that two members never hand out the same free slot.
The slot then stays the camera's, whatever else changes, so the group's sticky assignment keeps it where
it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg

from infra.foundation.config import CameraConfig, Config, DoorConfig
from infra.foundation.retry import connected, reconnecting

log = logging.getLogger("rollcall.group")

SLOT_LOCK = 0x726F6C6C  # pg_advisory_xact_lock key of slot allocation ("roll")


@dataclass(frozen=True)
class Catalogue:
    """The campus's cameras and doors as the database has them, and each camera's slot."""

    cameras: tuple[CameraConfig, ...]
    doors: tuple[DoorConfig, ...]
    slots: dict[str, int]  # camera id -> slot

    def costs(self, door_cost: float, room_cost: float) -> dict[int, float]:
        """Slot -> the cost of its enabled cameras."""
        costs: dict[int, float] = {}
        for camera in self.cameras:
            if camera.enabled and camera.id in self.slots:
                slot = self.slots[camera.id]
                costs[slot] = costs.get(slot, 0.0) + (room_cost if camera.role == "room" else door_cost)
        return costs

    def in_slots(self, slots: set[int]) -> set[str]:
        return {camera_id for camera_id, slot in self.slots.items() if slot in slots}

    def applied_to(self, config: Config) -> Config:
        """``config`` with the database's cameras and doors in place of its own."""
        return config.model_copy(update={"cameras": list(self.cameras), "doors": list(self.doors)})


async def read_catalogue(conn: asyncpg.Connection, slot_count: int) -> Catalogue:
    """The cameras and doors, slots allocated first to cameras without one (or with one past the count);
    ``slot_count`` 0 (a processor outside a group, which runs every camera): none allocated, nothing written."""
    if slot_count > 0:
        await _allocate_slots(conn, slot_count)
    return await _read_rows(conn)


async def _allocate_slots(conn: asyncpg.Connection, slot_count: int) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SLOT_LOCK)
        rows = await conn.fetch("SELECT id, slot FROM camera ORDER BY id")
        used: dict[int, int] = {}
        for row in rows:
            if row["slot"] is not None and row["slot"] < slot_count:
                used[row["slot"]] = used.get(row["slot"], 0) + 1
        for row in rows:
            if row["slot"] is None or row["slot"] >= slot_count:
                slot = min(range(slot_count), key=lambda s: (used.get(s, 0), s))
                used[slot] = used.get(slot, 0) + 1
                await conn.execute("UPDATE camera SET slot = $2 WHERE id = $1", row["id"], slot)
                log.info("camera %s: slot %d", row["id"], slot)


async def _read_rows(conn: asyncpg.Connection) -> Catalogue:
    cameras, slots = [], {}
    for row in await conn.fetch("""SELECT id, name, role, room_id, url, analysis_fps, enabled, min_tracking_fps,
                                          slot FROM camera ORDER BY id"""):
        try:
            cameras.append(CameraConfig(id=row["id"], name=row["name"], role=row["role"], room=row["room_id"],
                                        url=row["url"], analysis_fps=row["analysis_fps"], enabled=row["enabled"],
                                        min_tracking_fps=row["min_tracking_fps"]))
        except ValueError as exc:  # a row edited by hand into something the processor cannot run
            log.error("camera %s in the database is not usable, left out: %s", row["id"], _first_line(exc))
            continue
        slots[row["id"]] = row["slot"]
    doors = []
    for row in await conn.fetch("""SELECT id, room_id, door_camera_id, room_camera_id, entry_zone, transit_min_s,
                                          transit_max_s FROM door ORDER BY id"""):
        try:
            doors.append(DoorConfig(id=row["id"], room=row["room_id"], door_camera=row["door_camera_id"],
                                    room_camera=row["room_camera_id"], entry_zone=json.loads(row["entry_zone"]),
                                    transit={"min_s": row["transit_min_s"], "max_s": row["transit_max_s"]}))
        except ValueError as exc:
            log.error("door %s in the database is not usable, left out: %s", row["id"], _first_line(exc))
    return Catalogue(tuple(cameras), tuple(doors), slots)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class CatalogueWatcher:
    """Reads the catalogue now and then; calls ``on_change`` with each new one (not with an equal one)."""

    def __init__(self, database_url: str, slot_count: int, poll_s: float,
                 on_change: Callable[[Catalogue], Awaitable[None] | None]):
        self.database_url = database_url
        self.slot_count = slot_count
        self.poll_s = poll_s
        self.on_change = on_change
        self.current: Catalogue | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async for attempt in reconnecting(what="camera catalogue", errors=(OSError, asyncpg.PostgresError,
                                                                           asyncio.TimeoutError), log=log):
            with attempt:
                conn = await asyncpg.connect(self.database_url, timeout=10)
                try:
                    connected(attempt)
                    while True:
                        catalogue = await read_catalogue(conn, self.slot_count)
                        if catalogue != self.current:
                            self.current = catalogue
                            result = self.on_change(catalogue)
                            if asyncio.iscoroutine(result):
                                await result
                        self.ready.set()
                        await asyncio.sleep(self.poll_s)
                finally:
                    await conn.close()
