"""Prometheus metrics of the processor's stages (cameras and the publisher define their own).

Served on ``/metrics`` by :func:`serve` (the foundation's server, re-exported here with the helpers).
"""

from __future__ import annotations

from infra.foundation.metrics import Counter, Gauge, Histogram, get_or_create, serve

__all__ = ["BATCH_SIZE", "EVENT_LATENCY", "FACES", "QUEUE_DEPTH", "RECOGNITIONS", "STAGE_SECONDS",
           "Counter", "Gauge", "Histogram", "get_or_create", "serve"]

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
