"""Prometheus metrics plumbing shared by every service: one way to define a metric, one /metrics server.

Each service defines its own metrics with :func:`get_or_create` (the processor's stages in
``processor/metrics.py``, cameras in ``processor/ingest/metrics.py``, the publisher, the writer) and serves them
with :func:`serve` (prometheus_client's own HTTP server, in a thread).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

__all__ = ["Counter", "Gauge", "Histogram", "get_or_create", "serve"]


def get_or_create(kind, name: str, documentation: str, **kwargs):
    """The collector ``name`` on the default registry: made now, or the one already registered under that
    name (a module imported twice, as tests and reloads do: prometheus_client would refuse a second one).
    A counter is registered as ``name`` without ``_total``, so both spellings are looked up."""
    # prometheus_client has no public lookup by name; this is the one place that reads its index.
    names = REGISTRY._names_to_collectors  # noqa: SLF001
    existing = names.get(name) or names.get(name.removesuffix("_total")) or names.get(name + "_total")
    if existing is None:
        return kind(name, documentation, **kwargs)
    if not isinstance(existing, kind):
        raise ValueError(f"metric {name} is already registered as a {type(existing).__name__}")
    return existing


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Start the /metrics HTTP server in a daemon thread; return the bound port (0 = a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_address[1]
