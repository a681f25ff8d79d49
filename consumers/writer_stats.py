"""What the attendance writer counts: Prometheus metrics (served by `rollcall attendance writer
--metrics-port`, labelled by consumer group), its own counters (:class:`WriterStats`, printed by the
command line) and how it is (:class:`WriterHealth`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from infra.foundation import metrics

MESSAGES = metrics.get_or_create(metrics.Counter, "rollcall_writer_messages", "Messages read from the event topics",
                                 labelnames=["group"])
EVENT_OUTCOMES = metrics.get_or_create(metrics.Counter, "rollcall_writer_events",
                                       "Messages by outcome: stored (new), duplicate, dead_letter",
                                       labelnames=["group", "outcome"])
ATTENDANCE_CHANGES = metrics.get_or_create(metrics.Counter, "rollcall_writer_attendance_changes",
                                           "Attendance rows created or changed", labelnames=["group"])
ATTENDANCE_PUBLISHED = metrics.get_or_create(metrics.Counter, "rollcall_writer_attendance_events_published",
                                             "Attendance events sent from the outbox", labelnames=["group"])
RETRIES = metrics.get_or_create(metrics.Counter, "rollcall_writer_batch_retries",
                                "Batches rolled back and read again (database or broker away)", labelnames=["group"])
BATCH_SECONDS = metrics.get_or_create(metrics.Histogram, "rollcall_writer_batch_seconds",
                                      "Writing one batch and its offsets in one transaction", labelnames=["group"],
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG = metrics.get_or_create(metrics.Gauge, "rollcall_writer_lag_messages",
                            "Messages on a partition not yet stored (high watermark of the last fetch - next offset; "
                            "negative: the broker's log ends before what is stored, see log resets)",
                            labelnames=["group", "topic", "partition"])
LOG_RESETS = metrics.get_or_create(metrics.Counter, "rollcall_writer_log_resets",
                                   "Partitions whose log ended before the stored offset (log lost or topic made "
                                   "again): read again from the beginning", labelnames=["group", "topic", "partition"])
ISOLATED = metrics.get_or_create(metrics.Counter, "rollcall_writer_batches_bisected",
                                 "Batches PostgreSQL refused for a message's data, bisected to dead-letter that message",
                                 labelnames=["group"])


@dataclass
class WriterStats:
    batches: int = 0
    messages: int = 0
    events: int = 0  # sightings stored (new, de-duplicated)
    duplicates: int = 0
    dead_letters: int = 0
    attendance_changes: int = 0
    published: int = 0
    retries: int = 0
    bisected: int = 0  # batches PostgreSQL refused for a message's data
    log_resets: int = 0  # partitions read again because the broker's log ended before the stored offset
    housekeeping_errors: int = 0  # rounds of the clock / outbox / purge that failed (and were retried)
    assignments: int = 0  # partition assignments the group gave this member (1 + rebalances it took part in)
    partitions: int = 0  # partitions assigned now
    started: float = field(default_factory=time.monotonic)


@dataclass
class WriterHealth:
    """What :meth:`AttendanceWriter.health` reports, kept up to date by the consumer loop."""

    paused: str | None = None  # why the last batch was not written (None: it was)
    log_resets: list[dict[str, Any]] = field(default_factory=list)  # partitions whose log was lost
    last_progress: float = field(default_factory=time.monotonic)  # when a batch was last stored

    def report(self, stats: WriterStats) -> dict[str, Any]:
        """'ok', 'paused' (the last batch was not written: database or broker away) or 'log_lost' (a
        partition's log was lost since it started: see log_resets)."""
        state = "paused" if self.paused else "log_lost" if self.log_resets else "ok"
        return {"state": state, "paused_by": self.paused, "log_resets": list(self.log_resets),
                "since_progress_s": round(time.monotonic() - self.last_progress, 1),
                "dead_letters": stats.dead_letters, "batches_bisected": stats.bisected}
