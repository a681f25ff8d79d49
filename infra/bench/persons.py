"""`rollcall bench persons`: the room-camera pipeline against its own ceiling and a naive loop, in one run.

The same three figures for room cameras, in frames per second: the real processor on N RTSP room
streams (ingest → batcher → person stage → per-camera ByteTrack → handoff → presence events on Kafka);
the detector alone on frames in memory at the batch size the pipeline formed; a naive loop (one frame at
a time: detect at the detector's full input, then track).

The pipeline's figure counts the frames it analysed, that is served with an answer: a frame the motion
gate coasts (nothing moved since the camera's detector last ran, so the detector would say the same and
the tracks stay where they are) counts like a detected one, because the tracks and the presence events it
gives are the same. So the pipeline can beat the ceiling and the naive loop by the work it skips; how
much it skipped is reported beside it (``detected_share``: frames the detector ran on, of those analysed;
``input_sides``: each camera's person-detector input side at the end, chosen from the people it saw;
``room_face_searches_skipped``: detected frames not searched for faces because nobody in them was tall enough
to show one the quality gate would pass, :mod:`processor.stages.room_face_sizes`).
``profile`` says where the window's time went: the person stage's batches' share of it (its turn at the
inference gate to its result: detection, room faces, the stage's own work with them), ms a batch, and the
cores the process used of the machine's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.bench.common import load_frames, percentiles_ms, profile_counters, switch_on, window_profile
from infra.devstack import stack
from infra.devstack.run_space import run_space
from infra.devstack.stack import start_embedded_stack
from infra.foundation.config import CameraConfig, Config, DoorConfig
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.runner import render_cached
from processor.service import Processor
from processor.stages.faces import FaceAnalyzer
from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetector


PERSON_STAGES = ("persons",)  # the stages the profile covers: detection and room faces run in one


@dataclass
class RoomPipelineFigures:
    frames_per_s: float
    persons_per_s: float
    mean_batch: float
    latencies_s: list[float]
    dropped: int
    decoded: int
    events: int
    detected_share: float
    input_sides: dict
    gate_reasons: dict  # the motion gates' decisions by reason, over the whole run (warm-up included)
    faces_skipped: int  # detected frames not searched for faces: nobody tall enough to show a usable one
    profile: dict  # the person stage's share of the window and ms a batch, the cores the process used


async def measure_room_pipeline(config: Config, state, database_url: str, room_video: Path, streams: int,
                                seconds: float, warmup_s: float, analysis_fps: float) -> RoomPipelineFigures:

    run_id = uuid.uuid4().hex[:6]
    mounts = {f"/bench-{run_id}-{i}/room": room_video for i in range(streams)}
    stack.change_rtsp_mounts(add=mounts)
    room = config.rooms[0].id if config.rooms else "bench"
    cameras = [CameraConfig(id=f"bench-room-{i}", url=state.rtsp_url(mount.lstrip("/")), role="room", room=room,
                            analysis_fps=analysis_fps) for i, mount in enumerate(mounts)]
    zone = config.doors[0].entry_zone if config.doors else [(0, 0), (1, 0), (1, 1)]
    # A door per room camera (its camera never runs here) so each camera has its entry zone and handoff.
    doors = [DoorConfig(id=f"bench-door-{i}", room=room, door_camera=f"bench-door-{i}", room_camera=camera.id,
                        entry_zone=zone) for i, camera in enumerate(cameras)]
    # cameras switched on at different moments, as on a campus (see switch_on)
    await asyncio.to_thread(switch_on, [camera.url for camera in cameras], frame_period_s=0.1)
    bench_config = config.model_copy(update={"cameras": cameras, "doors": doors})
    processor = Processor(bench_config, database_url=database_url, kafka_bootstrap_servers=state.kafka_bootstrap_servers)
    try:
        await processor.start()
        await asyncio.sleep(warmup_s)
        batcher, room_stage = processor.room_batcher, processor.room
        frames0, batches0 = batcher.frames, batcher.batches
        persons0, latencies0 = processor.person_stage.persons, len(room_stage.latencies_s)
        detected0, coasted0 = processor.person_stage.detected, processor.person_stage.coasted
        faces_skipped0 = processor.person_stage.faces_skipped
        counters0 = profile_counters(PERSON_STAGES)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        profile = window_profile(counters0, profile_counters(PERSON_STAGES), elapsed)
        frames = batcher.frames - frames0
        batches = max(1, batcher.batches - batches0)
        persons = processor.person_stage.persons - persons0
        detected = processor.person_stage.detected - detected0
        coasted = processor.person_stage.coasted - coasted0
        faces_skipped = processor.person_stage.faces_skipped - faces_skipped0
        gating = processor.person_stage.gating
        per_camera = gating.stats() if gating is not None else {}
        sides = {camera: stats["side"] for camera, stats in per_camera.items()}
        reasons: dict[str, int] = {}
        for stats in per_camera.values():
            for reason, count in stats["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        latencies = list(room_stage.latencies_s)[latencies0:]
        stats = processor.ingest.stats()
    finally:
        await processor.stop()
        stack.change_rtsp_mounts(remove=mounts)
    return RoomPipelineFigures(frames_per_s=frames / elapsed, persons_per_s=persons / elapsed,
                               mean_batch=frames / batches, latencies_s=latencies,
                               dropped=sum(s.get("dropped", 0) for s in stats.values()),
                               decoded=sum(s.get("decoded", 0) for s in stats.values()), events=len(latencies),
                               detected_share=detected / max(1, detected + coasted), input_sides=sides,
                               gate_reasons=reasons, faces_skipped=faces_skipped, profile=profile)


def measure_person_ceiling(detector, frames: list[np.ndarray], batch: int, seconds: float, faces=None) -> float:
    """Frames per second of the models alone (the person detector, and the face models when room
    cameras look for faces too), frames in memory, batches of ``batch``."""
    done, index = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [frames[(index + k) % len(frames)] for k in range(batch)]
        detector.detect(chunk)
        if faces is not None:
            faces.analyse(chunk)
        index += batch
        done += batch
    return done / (time.perf_counter() - started)


def measure_person_naive(detector, frames: list[np.ndarray], seconds: float, fps: float, faces=None) -> float:
    """Frames per second of a per-frame loop: detect one frame (persons, then faces), track it, next."""

    tracker = PersonTracker("naive", fps)
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        image = frames[done % len(frames)]
        tracker.update(done / fps, detector.detect([image])[0], image)
        if faces is not None:
            faces.analyse([image])
        done += 1
    return done / (time.perf_counter() - started)


def bench_persons(config: Config, *, streams: int, seconds: float, analysis_fps: float = 5.0,
                  say=lambda _m: None) -> dict:
    spec, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    state, _ = start_embedded_stack(config)
    say(f"pipeline: {streams} RTSP room stream(s) of {rendered.room_video.name} at {analysis_fps:g} fps analysis "
        f"for {seconds:g} s")
    with run_space(config, state.database_url, state.kafka_bootstrap_servers, kind="bench") as space:
        pipeline = asyncio.run(measure_room_pipeline(space.config, state, space.database_url, rendered.room_video,
                                                     streams, seconds, warmup_s=4.0, analysis_fps=analysis_fps))
    # The same frames, in memory: the stretch of the video with people in the room.
    frames = load_frames(rendered.room_video, start_s=20.0, count=60, every=2)
    # the pipeline's precision (auto: int8 on a CPU), so the ratios compare the work done, not two models
    detector = PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection,
                              precision=config.models.person_precision, providers=config.models.providers or None)
    faces = None
    if config.tracking.room_faces:

        faces = FaceAnalyzer(config.models.pack, config.thresholds, input_size=None)
    batch = max(1, int(round(pipeline.mean_batch)))
    say(f"ceiling: the models alone at batch {batch} for {seconds / 2:g} s")
    ceiling = measure_person_ceiling(detector, frames, batch, seconds / 2, faces)
    say(f"naive: one frame at a time for {seconds / 2:g} s")
    naive = measure_person_naive(detector, frames, seconds / 2, analysis_fps, faces)
    pct = percentiles_ms(pipeline.latencies_s)
    # what the cameras are asked for: the most ratio_naive can show is a pipeline analysing all of it
    offered = streams * analysis_fps

    return {
        "streams": streams,
        "seconds": seconds,
        "analysis_fps": analysis_fps,
        "precision": detector.precision,
        "pipeline_frames_per_s": round(pipeline.frames_per_s, 2),
        "pipeline_persons_per_s": round(pipeline.persons_per_s, 2),
        "mean_batch": round(pipeline.mean_batch, 2),
        "detected_share": round(pipeline.detected_share, 3),
        "room_face_searches_skipped": pipeline.faces_skipped,
        "input_sides": pipeline.input_sides,
        "gate_reasons": pipeline.gate_reasons,
        "profile": pipeline.profile,
        "ceiling_frames_per_s": round(ceiling, 2),
        "naive_frames_per_s": round(naive, 2),
        "ratio_ceiling": round(pipeline.frames_per_s / ceiling, 3) if ceiling else None,
        "ratio_naive": round(pipeline.frames_per_s / naive, 3) if naive else None,
        "offered_frames_per_s": round(offered, 2),
        "ratio_naive_reachable": round(offered / naive, 3) if naive else None,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "events": pipeline.events,
        "frames_dropped": pipeline.dropped,
        "frames_decoded": pipeline.decoded,
        "latency_note": "capture of the deciding room frame to the presence event handed to the publisher",
    }
