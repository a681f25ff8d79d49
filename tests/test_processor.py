"""The processor as a whole on a real RTSP door stream: it runs, serves /metrics with per-camera state,
batch sizes, stage latencies and queue depths, and writes unknown faces to the review queue."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import asyncpg

from infra.foundation import db
from infra.devstack import stack as embedded
from infra.foundation.config import EXAMPLE_CONFIG, CameraConfig, load_config
from processor.service import Processor
from infra.scenario.mounts import render_cached
from infra.foundation.paths import PROJECT_ROOT


async def test_processor_metrics_and_review_queue(stack, fresh_database):

    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    db.migrate(fresh_database)
    mounts = embedded.read_rtsp_mounts()
    embedded.set_rtsp_mounts({**mounts, "/proc-test/door": rendered.door_video})
    config = load_config(EXAMPLE_CONFIG, environ={})
    camera = CameraConfig(id="door-test", url=stack.rtsp_url("proc-test/door"), role="door", room="A101",
                          analysis_fps=10)
    config = config.model_copy(update={"cameras": [camera], "doors": []})
    # An empty gallery: every face track is unknown, so the review queue fills.
    processor = Processor(config, database_url=fresh_database, kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                          metrics_port=0)
    try:
        await processor.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and processor.review.written < 1:
            await asyncio.sleep(0.5)
        body = (await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{processor.metrics_port}/metrics", timeout=5).read()
        )).decode()
    finally:
        await processor.stop()
        embedded.set_rtsp_mounts(mounts)
    assert 'rollcall_camera_state{camera="door-test",state="STREAMING"} 1.0' in body
    for name in ("rollcall_camera_frames_decoded_total{camera=\"door-test\"}", "rollcall_batch_size_count{stage=\"faces\"}",
                 "rollcall_stage_seconds_count{stage=\"faces\"}", "rollcall_queue_depth{queue=\"batches\"}",
                 "rollcall_faces_total{camera=\"door-test\"", "rollcall_recognitions_total{camera=\"door-test\",identity=\"unknown\"}"):
        assert name in body, name
    assert processor.review.written >= 1
    conn = await asyncpg.connect(fresh_database)
    try:
        row = await conn.fetchrow("SELECT camera_id, status, embedding_dim, length(crop_jpeg) AS size, expires_at > now() AS live "
                                  "FROM review_face LIMIT 1")
    finally:
        await conn.close()
    assert row["camera_id"] == "door-test" and row["status"] == "pending" and row["embedding_dim"] == 128
    assert row["size"] > 1000 and row["live"]
