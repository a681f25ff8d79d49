"""What the processor benchmarks share: frames loaded from a rendered video, latency percentiles, streams
switched on one after the other."""

from __future__ import annotations

import os
import time
from pathlib import Path

import av
import numpy as np
from prometheus_client import REGISTRY


def stage_seconds(stage: str) -> tuple[float, float]:
    """(seconds, calls) so far of the stage's batches (``rollcall_stage_seconds``: from the turn at the
    inference gate to the result, model calls and the stage's own work with them)."""
    return (REGISTRY.get_sample_value("rollcall_stage_seconds_sum", {"stage": stage}) or 0.0,
            REGISTRY.get_sample_value("rollcall_stage_seconds_count", {"stage": stage}) or 0.0)


def profile_counters(stages) -> dict:
    """The counters :func:`window_profile` compares: each stage's (seconds, calls), the process's CPU time."""
    return {**{stage: stage_seconds(stage) for stage in stages}, "cpu": time.process_time()}


def window_profile(before: dict, after: dict, elapsed: float) -> dict:
    """Where a window's time went: each stage's busy share (seconds in calls per second of the window; with
    several inference slots they add up to more than 1) and ms a call; the cores the process used (CPU
    seconds per second, decoding included) of the machine's ``cpu_cores``. A stage busy most of the window
    on a process well below the machine's cores is waiting for its calls, not for CPU."""
    profile = {}
    for stage in (key for key in after if key != "cpu"):
        seconds, calls = after[stage][0] - before[stage][0], after[stage][1] - before[stage][1]
        profile[f"{stage}_busy"] = round(seconds / elapsed, 3)
        profile[f"{stage}_ms_per_call"] = round(1000 * seconds / calls, 1) if calls else None
    profile["process_cores"] = round((after["cpu"] - before["cpu"]) / elapsed, 2)
    profile["cpu_cores"] = os.cpu_count()
    return profile


def percentiles_ms(latencies_s: list[float]):
    """q -> the q-th percentile of the latencies in milliseconds (None without any)."""
    latencies_ms = sorted(x * 1000 for x in latencies_s)

    def pct(q: float):
        return round(float(np.percentile(latencies_ms, q)), 1) if latencies_ms else None

    return pct


def load_frames(video: Path, *, start_s: float, count: int, every: int = 1) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if frame.time is not None and frame.time < start_s:
                continue
            if index % every == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames


def switch_on(urls: list[str], *, frame_period_s: float, open_timeout_s: float = 10.0) -> None:
    """Start each stream's media on the loopback server one after the other, as a campus's cameras were
    switched on at different moments. The server starts a mount's media with its first client and keeps it
    playing; a processor opens all its streams within a few milliseconds, so without this every stream's
    frame of a period arrives within a few milliseconds of the others' (seen in `bench faces`: its batcher
    waited ~50 ms for the next burst of eight frames before every other batch), which independent cameras
    never do. Each open takes a few hundred milliseconds; a pause of a fraction of the frame period between
    them spreads the phases further."""
    for index, url in enumerate(urls):
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=open_timeout_s) as container:
            next(container.demux(video=0), None)  # the media plays from here on, client or not
        time.sleep(frame_period_s * (index + 1) / (len(urls) + 1))
