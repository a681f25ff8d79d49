"""The processor's HTTP endpoint: Prometheus ``/metrics`` and a ``/health`` readiness check, on one port.

``/health`` answers JSON: ``{"state": ..., "stages": {name: {"state", "restarts", "last_error"}}}``,
HTTP 200 when the state is ``ok`` (started, every stage task running) and 503 otherwise (``starting``,
``degraded``: a stage waiting to restart, ``failed``: a stage gave up and the processor is stopping), so
that a container healthcheck or a load balancer sees a processor whose cameras decode but whose stages
do not run. Any other path is the metrics, as prometheus_client's own server answers.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Scrapes every few seconds: not logged."""


def health_app(report: Callable[[], dict[str, Any]]):
    """A WSGI app: ``/health`` from ``report()`` (its ``state`` picks the status), the rest ``/metrics``."""
    metrics_app = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") != "/health":
            return metrics_app(environ, start_response)
        body = report()
        status = "200 OK" if body.get("state") == "ok" else "503 Service Unavailable"
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def serve(port: int, report: Callable[[], dict[str, Any]], host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` and ``/health`` on ``host:port`` in a daemon thread; the bound port (0: a free one)."""
    server = make_server(host, port, health_app(report), ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="processor-http", daemon=True).start()
    return server.server_address[1]
