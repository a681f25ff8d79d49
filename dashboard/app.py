"""The Starlette application: the middleware, the live services, and the routes of every area.

Every route is declared in a module of :mod:`dashboard.routes` through
:class:`~dashboard.guard.RouteTable` with the roles that may use it; the guard refuses malformed path and
query values (4xx), an anonymous request (pages: 303 to /login, API: 401 JSON), a role that may not
(403), and an unsafe method (POST, PUT, PATCH, DELETE) without the session's CSRF token (403), all
before the request's body is read; :class:`BodyLimit` counts the body as it streams in
(``dashboard.max_body_bytes``, ``max_upload_bytes`` for multipart). Only ``/login`` and ``/static`` are
public. Data-level checks (a faculty member's courses, a student's own record, live data only of the
rooms where they teach at the time) are in the handlers, through the user's
:class:`~dashboard.auth.Scope` and :func:`~dashboard.web.live_rooms`.
"""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import auth
from dashboard.health import ProcessorMetrics
from dashboard.limits import BodyLimit
from dashboard.live import LiveHub, StreamLimits
from dashboard.routes import (account, analytics, campus, exports, live, people, plans, records, review, sessions, system,
                              video)
from dashboard.routes import cameras, doors
from dashboard.services import Problem, Services
from dashboard.routes import enrol_video, enrol_zip, users
from dashboard.video import VideoHub
from dashboard.web import HERE, templates
from infra.foundation.endpoints import resolve

__all__ = ["ROUTES", "app_from_config", "create_app", "templates"]

ROUTES: list[Route] = [*account.ROUTES, *live.ROUTES, *video.ROUTES, *analytics.ROUTES, *sessions.ROUTES,
                       *records.ROUTES, *exports.ROUTES, *people.ROUTES, *review.ROUTES, *system.ROUTES,
                       *campus.ROUTES, *plans.ROUTES, *cameras.ROUTES, *doors.ROUTES]

ROUTES += [*users.ROUTES, *enrol_zip.ROUTES, *enrol_video.ROUTES]


class SecurityHeaders:
    """Content-Security-Policy (everything from this origin, no inline script), no framing, no sniffing."""

    HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                             b"script-src 'self'; style-src 'self'; connect-src 'self'; "
                                             b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
               (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"same-origin")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + self.HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _lifespan(services: Services, video_source_factory, metrics_interval_s: float):
    """Start the live feed, the video hub and the processor metrics with the app; stop them after it."""
    config = services.config
    topics, d = config.kafka.topics, config.dashboard

    @contextlib.asynccontextmanager
    async def lifespan(app):
        services.hub = LiveHub(services.kafka_bootstrap_servers,
                               {"recognitions": topics.recognitions.name, "presence": topics.presence.name,
                                "occupancy": topics.occupancy.name, "overlays": topics.overlays.name},
                               client_id=f"{config.kafka.client_id}-dashboard",
                               security_protocol=config.kafka.security_protocol, presence_expiry_s=d.presence_expiry_s,
                               occupancy_history=d.occupancy_history_s, max_clients=d.max_live_clients,
                               client_queue=d.client_queue)
        services.video = VideoHub(config, services.camera_urls, services.hub.latest_overlay,
                                  source_factory=video_source_factory)
        services.metrics = ProcessorMetrics(list(d.processor_metrics_urls), metrics_interval_s)
        await services.hub.start()
        await services.metrics.start()
        with contextlib.suppress(Problem):
            await services.get_pool()
            await services.cameras()  # the video feeds of the campus's cameras, not only the file's
        try:
            yield
        finally:
            await services.video.close()
            await services.metrics.stop()
            await services.hub.stop()
            if services.pool is not None:
                await services.pool.close()

    return lifespan


def create_app(config, *, database_url: str, kafka_bootstrap_servers: str, camera_urls: dict[str, str] | None = None,
               secret_key: str | None = None, metrics_interval_s: float = 3.0, video_source_factory=None) -> Starlette:
    """The dashboard for ``config`` against resolved addresses (see infra/foundation/endpoints.py)."""
    services = Services(config, database_url, kafka_bootstrap_servers, dict(camera_urls or {}))
    services.limiter = auth.LoginLimiter(config.dashboard.login_max_failures, config.dashboard.login_window_s)
    services.streams = StreamLimits(config.dashboard.max_streams_per_user)
    d = config.dashboard
    routes = list(ROUTES) + [Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static")]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(BodyLimit, max_body_bytes=d.max_body_bytes, max_upload_bytes=d.max_upload_bytes,
                             upload_limits={enrol_zip.IMPORT_PATH: d.max_zip_upload_bytes,
                                            enrol_video.ENROL_VIDEO_PATH: d.max_enrol_video_bytes}),
                  Middleware(SessionMiddleware, secret_key=secret_key or auth.load_secret_key(config),
                             session_cookie="rollcall_session", max_age=d.session_max_age_s, same_site="lax",
                             https_only=d.https_only_cookies)]
    app = Starlette(routes=routes, middleware=middleware,
                    lifespan=_lifespan(services, video_source_factory, metrics_interval_s))
    app.state.services = services
    return app


def app_from_config(config) -> Starlette:
    """Resolve the config's addresses ("embedded" → the running stack) and build the app."""
    endpoints = resolve(config, need=("database", "kafka"))
    # the cameras' URLs are the campus's in PostgreSQL (an admin edits them), not the file's
    return create_app(config, database_url=endpoints.database_url,
                      kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
