"""`rollcall bench faces` and `rollcall bench persons`: a pipeline against its own ceiling and a naive
loop, in one run.

Three figures on the same frames (the default scenario's door video):

- pipeline: the real processor (N concurrent RTSP streams from the embedded stack → ingest → batcher →
  face stage → face tracks → recognition events on Kafka), faces per second over a fixed window;
- ceiling: the same model work in a tight loop over frames already in memory, at the batch sizes the
  pipeline formed: detect → align → quality gate on every frame, and the embedder on the same share of
  the accepted faces as the pipeline embedded (it skips faces of tracks already decided): what the
  models allow on this machine for that work, with no decoding, queues or Kafka;
- naive: what a simple script does: per frame, detect at the frame's own size, then per face align
  and embed one at a time.

Ratios pipeline/ceiling and pipeline/naive come from the same run, so a busy machine moves all three.
The pipeline runs in a database and topics of its own (infra/devstack/run_space.py), removed afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from infra.devstack import stack
from infra.devstack.run_space import run_space
from infra.devstack.stack import start_embedded_stack
from infra.foundation.config import CameraConfig, Config, DoorConfig
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.runner import enroll_scenario_people, render_cached
from processor.frames import Frame
from processor.pipeline import FaceStage
from processor.service import Processor
from processor.stages.faces import FaceAnalyzer, FaceDetector, FaceEmbedder, align
from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetector


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


def faces_in(results) -> int:
    return sum(len(r.faces) for r in results)


def measure_ceiling(stage, embedder, frames: list[np.ndarray], batch: int, seconds: float,
                    embed_share: float) -> float:
    """Faces per second of the models alone, frames in memory, batches of ``batch``; the embedder runs on
    ``embed_share`` of the accepted faces (spread evenly), as in the pipeline."""

    wrapped = [Frame("bench", i, i / 10, time.time(), image) for i, image in enumerate(frames)]
    faces = 0
    credit = 0.0
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < seconds:
        chunk = [wrapped[(index + k) % len(wrapped)] for k in range(batch)]
        index += batch
        results = stage.process(chunk)
        faces += faces_in(results)
        crops = []
        for result in results:
            for face in result.faces:
                if face.crop is None:
                    continue
                credit += embed_share
                if credit >= 1.0:
                    credit -= 1.0
                    crops.append(face.crop)
        if crops:
            embedder.embed(crops)
    return faces / (time.perf_counter() - started)


def measure_naive(pack: str, thresholds, frames: list[np.ndarray], seconds: float) -> float:
    """Faces per second of a per-frame, per-face loop: detect at full frame size, embed one face at a time."""

    height, width = frames[0].shape[:2]
    detector = FaceDetector(pack, score_threshold=thresholds.face_detection,
                            input_size=(width + (-width) % 32, height + (-height) % 32))
    embedder = FaceEmbedder(pack)
    faces = 0
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < seconds:
        image = frames[index % len(frames)]
        index += 1
        for detection in detector.detect([image])[0]:
            embedder.embed([align(image, detection.landmarks)])
            faces += 1
    return faces / (time.perf_counter() - started)


@dataclass
class PipelineFigures:
    faces_per_s: float
    frames_per_s: float
    mean_batch: float
    latencies_s: list[float]
    dropped: int
    decoded: int
    embed_share: float  # embedded faces / faces that passed the quality gate


async def measure_pipeline(config: Config, state, database_url: str, door_video: Path, streams: int,
                           seconds: float, warmup_s: float) -> PipelineFigures:

    run_id = uuid.uuid4().hex[:6]
    mounts = {f"/bench-{run_id}-{i}/door": door_video for i in range(streams)}
    stack.change_rtsp_mounts(add=mounts)
    room = config.rooms[0].id if config.rooms else "bench"
    cameras = [CameraConfig(id=f"bench-door-{i}", url=state.rtsp_url(mount.lstrip("/")), role="door", room=room,
                            analysis_fps=10) for i, mount in enumerate(mounts)]
    bench_config = config.model_copy(update={"cameras": cameras, "doors": []})
    processor = Processor(bench_config, database_url=database_url, kafka_bootstrap_servers=state.kafka_bootstrap_servers)
    try:
        await processor.start()
        await asyncio.sleep(warmup_s)
        stage = processor.face_stage
        faces0 = sum(stage.gate_reasons.values())
        accepted0 = stage.gate_reasons.get("accepted", 0)
        embedded0 = processor.recognition.faces_embedded
        frames0, batches0 = processor.batcher.frames, processor.batcher.batches
        latencies0 = len(processor.recognition.latencies_s)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        faces = sum(stage.gate_reasons.values()) - faces0
        accepted = stage.gate_reasons.get("accepted", 0) - accepted0
        embedded = processor.recognition.faces_embedded - embedded0
        frames = processor.batcher.frames - frames0
        batches = max(1, processor.batcher.batches - batches0)
        stats = processor.ingest.stats()
        latencies = list(processor.recognition.latencies_s)[latencies0:]
    finally:
        await processor.stop()
        stack.change_rtsp_mounts(remove=mounts)
    return PipelineFigures(faces_per_s=faces / elapsed, frames_per_s=frames / elapsed, mean_batch=frames / batches,
                           latencies_s=latencies, dropped=sum(s.get("dropped", 0) for s in stats.values()),
                           decoded=sum(s.get("decoded", 0) for s in stats.values()),
                           embed_share=min(1.0, embedded / accepted) if accepted else 1.0)


def bench_faces(config: Config, *, streams: int, seconds: float, say=lambda _m: None) -> dict:
    spec, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    state, _ = start_embedded_stack(config)
    # Its own database and topics: no enrolment or message of another run can refuse or skew it.
    with run_space(config, state.database_url, state.kafka_bootstrap_servers, kind="bench") as space:
        asyncio.run(enroll_scenario_people(spec, space.config, space.database_url, say))
        say(f"pipeline: {streams} RTSP stream(s) of {rendered.door_video.name} for {seconds:g} s")
        pipeline = asyncio.run(measure_pipeline(space.config, state, space.database_url, rendered.door_video,
                                                streams, seconds, warmup_s=4.0))
    # The same frames, in memory: the stretch of the video where faces pass the door.
    frames = load_frames(rendered.door_video, start_s=3.0, count=300)
    pack = config.models.pack
    stage = FaceStage(FaceDetector(pack, score_threshold=config.thresholds.face_detection, input_size=None),
                      config.thresholds)
    batch = max(1, int(round(pipeline.mean_batch)))
    say(f"ceiling: the models alone at batch {batch}, embedding {pipeline.embed_share:.0%} of accepted faces, "
        f"for {seconds / 2:g} s")
    ceiling = measure_ceiling(stage, FaceEmbedder(pack), frames, batch, seconds / 2, pipeline.embed_share)
    say(f"naive: per frame, per face, for {seconds / 2:g} s")
    naive = measure_naive(pack, config.thresholds, frames, seconds / 2)
    pct = percentiles_ms(pipeline.latencies_s)

    return {
        "streams": streams,
        "seconds": seconds,
        "pipeline_faces_per_s": round(pipeline.faces_per_s, 2),
        "pipeline_frames_per_s": round(pipeline.frames_per_s, 2),
        "mean_batch": round(pipeline.mean_batch, 2),
        "embed_share": round(pipeline.embed_share, 3),
        "ceiling_faces_per_s": round(ceiling, 2),
        "naive_faces_per_s": round(naive, 2),
        "ratio_ceiling": round(pipeline.faces_per_s / ceiling, 3) if ceiling else None,
        "ratio_naive": round(pipeline.faces_per_s / naive, 3) if naive else None,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "events": len(pipeline.latencies_s),
        "frames_dropped": pipeline.dropped,
        "frames_decoded": pipeline.decoded,
        "latency_note": "capture of the deciding frame to the event handed to the publisher",
    }


# --- persons (room cameras) -------------------------------------------------------------------------
#
# The same three figures for room cameras, in frames per second (the detector runs on every analysed
# frame whatever it holds): the real processor on N RTSP room streams (ingest → batcher → person stage →
# per-camera ByteTrack → handoff → presence events on Kafka); the detector alone on frames in memory at
# the batch size the pipeline formed; a naive loop (one frame at a time: detect, then track).


@dataclass
class RoomPipelineFigures:
    frames_per_s: float
    persons_per_s: float
    mean_batch: float
    latencies_s: list[float]
    dropped: int
    decoded: int
    events: int


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
    bench_config = config.model_copy(update={"cameras": cameras, "doors": doors})
    processor = Processor(bench_config, database_url=database_url, kafka_bootstrap_servers=state.kafka_bootstrap_servers)
    try:
        await processor.start()
        await asyncio.sleep(warmup_s)
        batcher, room_stage = processor.room_batcher, processor.room
        frames0, batches0 = batcher.frames, batcher.batches
        persons0, latencies0 = processor.person_stage.persons, len(room_stage.latencies_s)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        frames = batcher.frames - frames0
        batches = max(1, batcher.batches - batches0)
        persons = processor.person_stage.persons - persons0
        latencies = list(room_stage.latencies_s)[latencies0:]
        stats = processor.ingest.stats()
    finally:
        await processor.stop()
        stack.change_rtsp_mounts(remove=mounts)
    return RoomPipelineFigures(frames_per_s=frames / elapsed, persons_per_s=persons / elapsed,
                               mean_batch=frames / batches, latencies_s=latencies,
                               dropped=sum(s.get("dropped", 0) for s in stats.values()),
                               decoded=sum(s.get("decoded", 0) for s in stats.values()), events=len(latencies))


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
    detector = PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection)
    faces = None
    if config.tracking.room_faces:

        faces = FaceAnalyzer(config.models.pack, config.thresholds, input_size=None)
    batch = max(1, int(round(pipeline.mean_batch)))
    say(f"ceiling: the models alone at batch {batch} for {seconds / 2:g} s")
    ceiling = measure_person_ceiling(detector, frames, batch, seconds / 2, faces)
    say(f"naive: one frame at a time for {seconds / 2:g} s")
    naive = measure_person_naive(detector, frames, seconds / 2, analysis_fps, faces)
    pct = percentiles_ms(pipeline.latencies_s)

    return {
        "streams": streams,
        "seconds": seconds,
        "analysis_fps": analysis_fps,
        "pipeline_frames_per_s": round(pipeline.frames_per_s, 2),
        "pipeline_persons_per_s": round(pipeline.persons_per_s, 2),
        "mean_batch": round(pipeline.mean_batch, 2),
        "ceiling_frames_per_s": round(ceiling, 2),
        "naive_frames_per_s": round(naive, 2),
        "ratio_ceiling": round(pipeline.frames_per_s / ceiling, 3) if ceiling else None,
        "ratio_naive": round(pipeline.frames_per_s / naive, 3) if naive else None,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "events": pipeline.events,
        "frames_dropped": pipeline.dropped,
        "frames_decoded": pipeline.decoded,
        "latency_note": "capture of the deciding room frame to the presence event handed to the publisher",
    }
