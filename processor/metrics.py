"""Prometheus metrics of the processor's stages (cameras and the publisher define their own).

Served on ``/metrics`` by :func:`serve` (prometheus_client's own HTTP server, in a thread).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server


def get_or_create(kind, name: str, documentation: str, **kwargs):
    # Safe against a second import (tests, reloads): reuse what is registered under that name.
    existing = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(name + "_total")
    return existing if existing is not None else kind(name, documentation, **kwargs)


BATCH_SIZE = get_or_create(Histogram, "rollcall_batch_size", "Frames per inference batch", labelnames=["stage"],
                            buckets=(1, 2, 4, 8, 16, 32, 64))
STAGE_SECONDS = get_or_create(Histogram, "rollcall_stage_seconds", "Time a stage spends on one batch",
                               labelnames=["stage"],
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_DEPTH = get_or_create(Gauge, "rollcall_queue_depth", "Items waiting between stages", labelnames=["queue"])
FACES = get_or_create(Counter, "rollcall_faces", "Faces detected, by quality-gate outcome",
                       labelnames=["camera", "outcome"])
RECOGNITIONS = get_or_create(Counter, "rollcall_recognitions", "Recognition decisions per face track",
                              labelnames=["camera", "identity"])
EVENT_LATENCY = get_or_create(Histogram, "rollcall_event_latency_seconds",
                               "From capture of the deciding frame to the event handed to the publisher",
                               labelnames=["kind"],
                               buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Start the /metrics HTTP server in a daemon thread; return the bound port (0 = a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_address[1]
