"""What every request handler shares: the live services of one dashboard process (database pool, the
Kafka live feed, video, processor metrics, login and stream limits) and :class:`Problem`, the error a
handler raises to refuse a request."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from starlette.requests import Request

from dashboard import auth, queries
from dashboard.auth import Scope, User
from dashboard.campus_state import Camera, Campus, CampusCache
from dashboard.live import StreamLimits
from infra.foundation.db import describe_unreachable

LIVE_CACHE_S = 5.0


class Problem(Exception):
    """A request the dashboard refuses, with the one line to show and its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Services:
    config: Any
    database_url: str
    kafka_bootstrap_servers: str
    camera_urls: dict[str, str]  # camera id -> the URL its live video reads instead of the stored one (tests)
    hub: Any = None
    video: Any = None
    metrics: Any = None
    limiter: auth.LoginLimiter | None = None
    streams: StreamLimits | None = None
    pool: Any = None
    pool_error: str | None = None
    _live: dict[str, tuple[float, dict]] = field(default_factory=dict)
    _names: tuple[float, dict[str, str]] = (0.0, {})
    _pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _campus: CampusCache = field(default_factory=CampusCache)
    _video_campus: Campus | None = None  # the campus the video feeds were last made from

    async def get_pool(self):
        if self.pool is not None:
            return self.pool
        async with self._pool_lock:
            if self.pool is None:
                try:
                    self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8, timeout=5,
                                                          command_timeout=30)
                    self.pool_error = None
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                    self.pool_error = str(describe_unreachable(self.database_url, exc))
                    raise Problem(f"database unavailable: {self.pool_error}", 503) from None
        return self.pool

    @contextlib.asynccontextmanager
    async def conn(self):
        pool = await self.get_pool()
        try:
            async with pool.acquire(timeout=10) as conn:
                yield conn
        except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.CannotConnectNowError,
                asyncio.TimeoutError) as exc:
            raise Problem(f"database unavailable: {type(exc).__name__}: {exc}", 503) from None
        except asyncpg.exceptions.UndefinedTableError as exc:
            raise Problem(f"the database is not migrated ({exc}): run `rollcall db migrate`", 503) from None

    async def user(self, session_id: str | None) -> User | None:
        """The account of a live server-side session (looked up on every request: revocation is immediate)."""
        if not session_id:
            return None
        async with self.conn() as conn:
            return await auth.session_user(conn, session_id)

    async def campus(self) -> Campus:
        """The campus as PostgreSQL holds it (read again every few seconds: edits show without a restart)."""
        return await self._campus.get(self.conn, self.config.site)

    async def cameras(self) -> tuple[Camera, ...]:
        """The campus's cameras as PostgreSQL holds them (the cameras page's source), for the health, live
        and video pages; the video feeds follow them (a camera added, edited, disabled or deleted)."""
        campus = await self.campus()
        if self.video is not None and campus is not self._video_campus:
            self._video_campus = campus
            await self.video.sync(campus.cameras, campus.doors, self.camera_urls)
        return campus.cameras

    def forget_campus(self) -> None:
        """After an edit of the campus (a camera, a door, a timetable slot, an account's courses): read it
        again, and the users' live rooms with it."""
        self._campus.forget()
        self._live.clear()

    async def scope(self, user: User) -> Scope:
        return auth.scope_of(user, await self.campus())

    async def live_rooms(self, user: User, scope: Scope, fresh: bool = False
                         ) -> dict[str, tuple[dt.datetime, dt.datetime]] | None:
        """None (admin: every room), else room -> (since, until): the rooms where one of the user's courses
        has a session now (in the database, or by the timetable), from its window's start to its end."""
        if scope.courses is None:
            return None
        cached = self._live.get(user.username)
        if not fresh and cached is not None and time.monotonic() - cached[0] < LIVE_CACHE_S:
            return cached[1]
        rooms = auth.timetable_windows(await self.campus(), scope.courses, dt.datetime.now(dt.timezone.utc))
        if scope.courses:
            async with self.conn() as conn:
                for room, (since, until) in (await queries.live_sessions(conn, scope.courses)).items():
                    old = rooms.get(room, (since, until))
                    rooms[room] = (min(old[0], since), max(old[1], until))
        self._live[user.username] = (time.monotonic(), rooms)
        return rooms

    async def names(self) -> dict[str, str]:
        if time.monotonic() - self._names[0] > 30:
            async with self.conn() as conn:
                self._names = (time.monotonic(), await queries.display_names(conn))
        return self._names[1]

    def forget_names(self) -> None:
        self._names = (0.0, {})

    async def rooms_in(self, scope: Scope) -> list[str]:
        return [r.id for r in (await self.campus()).rooms if scope.room(r.id)]

    async def courses_in(self, scope: Scope) -> list:
        return [c for c in (await self.campus()).courses if scope.course(c.id)]


def services_of(request: Request) -> Services:
    return request.app.state.services
