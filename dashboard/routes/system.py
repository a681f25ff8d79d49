"""The system's health (admin: cameras, processors, broker, database, the attendance writer's lag) and
this API's OpenAPI document."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard import queries
from dashboard.guard import RouteTable
from dashboard.health import consumer_lag
from dashboard.openapi import document
from dashboard.services import Problem, Services, services_of
from dashboard.web import ADMIN, ALL, render

ROUTES = RouteTable()
CAMERA_METRICS = ("fps", "analysis_fps", "drops_per_s", "dropped", "decoded", "reconnects", "tracking_fps",
                  "min_fps", "shortfall_fps")


async def _database_and_lag(services: Services) -> tuple[dict, dict]:
    """The database's state (with its ping) and the attendance writer's consumer lag."""
    config = services.config
    try:
        started = time.perf_counter()
        async with services.conn() as conn:
            await queries.ping(conn)
            database = {"state": "up", "ping_ms": round((time.perf_counter() - started) * 1000, 1)}
            topics = [config.kafka.topics.recognitions.name, config.kafka.topics.presence.name]
            lag = await consumer_lag(conn, services.hub, config.attendance.group_id, topics,
                                     services.kafka_bootstrap_servers)
    except Problem as exc:
        return {"state": "down", "error": exc.message}, {"error": "database unavailable"}
    return database, lag


def _camera_health(services: Services, camera) -> dict[str, Any]:
    metrics = services.metrics.cameras.get(camera.id, {}) if services.metrics else {}
    feed = services.video.feeds.get(camera.id) if services.video else None
    return {"id": camera.id, "name": camera.name, "role": camera.role, "room_id": camera.room,
            "enabled": camera.enabled, "state": metrics.get("state"),
            **{name: metrics.get(name) for name in CAMERA_METRICS},
            "dashboard_video": feed.state if feed and feed.source else "idle"}


async def _health(services: Services) -> dict:
    database, lag = await _database_and_lag(services)
    # the campus's cameras as PostgreSQL holds them (the cameras page's list), a disabled one too
    return {"cameras": [_camera_health(services, camera) for camera in await services.cameras()],
            "processors": services.metrics.sources if services.metrics else {},
            "broker": services.hub.status(), "database": database, "consumer_lag": lag,
            "video_peers": len(services.video.peers) if services.video else 0}


@ROUTES.page("/health", ADMIN)
async def health_page(request: Request) -> Response:
    """Cameras (state, fps, drops), broker, database, the attendance writer's lag."""
    return render(request, "health.html", {"h": await _health(services_of(request))})


@ROUTES.api("/api/health", ADMIN)
async def health_api(request: Request) -> Response:
    """Cameras (state, fps, drops from the processors' /metrics), broker, database, consumer lag."""
    return JSONResponse(await _health(services_of(request)))


@ROUTES.api("/api/openapi.json", ALL)
async def openapi(request: Request) -> Response:
    """This API's OpenAPI 3.1 document (generated from the routes, their roles and docstrings)."""
    return JSONResponse(document(request.app))
