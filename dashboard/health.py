"""Health: the processors' cameras (from their Prometheus /metrics), the broker, the database, and the
attendance writer's lag (its committed offsets, in PostgreSQL's consumer_offset table and/or the
broker's group offsets, against the topics' end offsets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

STATE_METRIC = "rollcall_camera_state"
COUNTERS = {"rollcall_camera_frames_decoded": "decoded", "rollcall_camera_frames_analysed": "analysed",
            "rollcall_camera_frames_dropped": "dropped", "rollcall_camera_frames_skipped": "skipped",
            "rollcall_camera_reconnects": "reconnects"}
# the scheduler's view of each camera (processor/scheduler.py): what its analysis got against its minimum
GAUGES = {"rollcall_tracking_rate_fps": "tracking_fps", "rollcall_tracking_min_fps": "min_fps",
          "rollcall_tracking_shortfall_fps": "shortfall_fps"}


def parse_metrics(text: str) -> dict[str, dict[str, Any]]:
    """Per camera: state (the label whose gauge is 1) and the frame counters."""
    from prometheus_client.parser import text_string_to_metric_families

    cameras: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            camera = sample.labels.get("camera")
            if camera is None:
                continue
            entry = cameras.setdefault(camera, {"state": None})
            if family.name == STATE_METRIC and sample.value == 1:
                entry["state"] = sample.labels.get("state")
            elif family.name in COUNTERS and sample.name.endswith("_total"):
                entry[COUNTERS[family.name]] = sample.value
            elif family.name in GAUGES:
                entry[GAUGES[family.name]] = round(sample.value, 2)
    return cameras


class ProcessorMetrics:
    """Scrapes each processor's /metrics; fps and drops/s from the change between two scrapes."""

    def __init__(self, urls: list[str], interval_s: float = 3.0):
        self.urls = urls
        self.interval_s = interval_s
        self.cameras: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, Any]] = {url: {"state": "not scraped yet"} for url in urls}
        self._previous: dict[str, tuple[float, dict]] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard-metrics")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self.scrape()
            await asyncio.sleep(self.interval_s)

    async def scrape(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=2.0) as client:
            for url in self.urls:
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    cameras = parse_metrics(response.text)
                except (httpx.HTTPError, ValueError) as exc:
                    self.sources[url] = {"state": "unreachable", "error": f"{type(exc).__name__}: {exc}"[:300],
                                         "at": time.time()}
                    for camera in self.cameras.values():
                        if camera.get("source") == url:
                            camera["state"] = "UNKNOWN (processor unreachable)"
                    continue
                now = time.monotonic()
                self.sources[url] = {"state": "up", "cameras": len(cameras), "at": time.time()}
                for camera_id, values in cameras.items():
                    previous = self._previous.get(camera_id)
                    entry = {**values, "source": url}
                    if previous is not None and now > previous[0]:
                        span = now - previous[0]
                        for key, rate in (("decoded", "fps"), ("analysed", "analysis_fps"),
                                          ("dropped", "drops_per_s")):
                            if key in values and key in previous[1]:
                                entry[rate] = round(max(0.0, values[key] - previous[1][key]) / span, 2)
                    self._previous[camera_id] = (now, values)
                    self.cameras[camera_id] = entry


async def consumer_lag(conn, hub, group_id: str, topics: list[str], bootstrap: str) -> dict[str, Any]:
    """The writer group's lag per topic: end offsets minus committed (PostgreSQL's consumer_offset rows
    first, the broker's group offsets where PostgreSQL has none)."""
    result: dict[str, Any] = {"group_id": group_id, "topics": {}, "source": None, "error": None}
    try:
        ends = await hub.end_offsets(topics)
    except Exception as exc:  # noqa: BLE001 - reported on the page
        result["error"] = f"end offsets: {type(exc).__name__}: {exc}"
        return result
    committed: dict[tuple[str, int], int] = {}
    sources = set()
    if conn is not None:
        rows = await conn.fetch("SELECT topic, partition, next_offset FROM consumer_offset WHERE consumer_group = $1",
                                group_id)
        for r in rows:
            committed[(r["topic"], r["partition"])] = r["next_offset"]
        if rows:
            sources.add("postgresql")
    missing = [tp for tp in ends if tp not in committed]
    if missing:
        try:
            async with asyncio.timeout(4):
                broker = await _broker_group_offsets(bootstrap, group_id)
            for tp, offset in broker.items():
                if tp not in committed and offset >= 0:
                    committed[tp] = offset
                    sources.add("kafka")
        except Exception as exc:  # noqa: BLE001 - a broker without group support: PostgreSQL only
            result["error"] = f"group offsets from the broker: {type(exc).__name__}: {exc}"[:300]
    result["topics"] = lag_by_topic(topics, ends, committed)
    result["source"] = "+".join(sorted(sources)) or None
    return result


def lag_by_topic(topics: list[str], ends: dict[tuple[str, int], int],
                 committed: dict[tuple[str, int], int]) -> dict[str, dict[str, Any]]:
    """Per topic: end offsets, committed offsets and the lag between them, over the partitions."""
    out: dict[str, dict[str, Any]] = {}
    for topic in topics:
        parts = {p: e for (t, p), e in ends.items() if t == topic}
        known = {p: committed[(topic, p)] for p in parts if (topic, p) in committed}
        out[topic] = {
            "end": sum(parts.values()),
            "committed": sum(known.values()) if known else None,
            # not clamped: a committed offset past the log's end (a broker that lost its log, a topic
            # re-created) makes the lag negative, and the partitions are named so the page says so
            "lag": sum(parts[p] - known.get(p, 0) for p in parts) if known else None,
            "ahead_of_log": sorted(p for p in known if known[p] > parts[p]),
            "partitions_committed": len(known), "partitions": len(parts)}
    return out


async def _broker_group_offsets(bootstrap: str, group_id: str) -> dict[tuple[str, int], int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()
