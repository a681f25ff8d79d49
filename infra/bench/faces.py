"""`rollcall bench faces`: a pipeline against its own ceiling and a naive
loop, in one run.

Three figures on the same frames (the default scenario's door video):

- pipeline: the real processor (N concurrent RTSP streams from the embedded stack, switched on one after
  the other so that their frames do not arrive in step: see ``switch_on`` → ingest → batcher → face stage →
  face tracks → recognition events on Kafka), faces per second over a fixed window (by default one whole loop
  of the video, so every stream offers all of it whatever moment it started at);
- ceiling: the same model work in a tight loop over frames already in memory, at the batch sizes the
  pipeline formed, on the very frames the pipeline analysed in its window (each analysed frame is matched
  to its frame of the video by a small thumbnail; up to 300 distinct frames, in the pipeline's proportions).
  The pipeline's door frames are not a fixed stretch of the video: idle doors analyse keyframes only and
  shed frames differ from run to run (the old fixed stretch had 0.61 faces a frame, the pipeline's window
  ~0.4; measured once each way the ratio came out the same, 0.367 and 0.363): detect → align → quality gate on every frame, and the embedder on the same share of
  the accepted faces as the pipeline embedded (it skips faces of tracks already decided): what the
  models allow on this machine for that work, with no decoding, queues or Kafka;
- naive: what a simple script does: per frame, detect at the frame's own size, then per face align
  and embed one at a time, on every frame the streams sent (in their proportions, up to 300 distinct
  ones): a script cannot skip a frame without looking at it, so the frames the pipeline did not decode or
  analyse count for the naive loop too.

Ratios pipeline/ceiling and pipeline/naive come from the same run, so a busy machine moves all three.
``ratio_ceiling`` is against the lower of the ceiling and the faces the streams offered (``offered_faces_per_s``:
the faces the face stage finds on every frame the streams sent in the window, analysed, shed or never
decoded (an idle door decodes keyframes only; ``sent_frames_per_s``, against ``offered_frames_per_s`` put
into the buffers), each placed in the video by its stream time, counted after the pipeline has stopped; ``offered_placed``:
the share of analysed frames that placing puts where their thumbnails were found; ``offered_unplaced``:
offered frames of cameras that analysed none in the window, which cannot be placed and are not counted;
``offered_faces_per_s_estimated``: the estimate of earlier versions, offered frames x the analysed frames'
faces a frame, which came out 7-28 % low because the frames shed under load hold more faces than those
analysed): a pipeline that analyses every frame it is given has done all there was to do, however much more the
models could have done; ``ratio_model_ceiling`` is against the models' rate alone. ``profile`` says where
the window's time went: the share of it the face stage's calls (detection, alignment, quality gate) and the
embedder's took (they add up to more than 1 when calls run side by side), ms a call, and the cores the
process used (decoding included).
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

from infra.bench.common import percentiles_ms, profile_counters, switch_on, window_profile
from infra.devstack import stack
from infra.devstack.run_space import run_space
from infra.devstack.stack import start_embedded_stack
from infra.foundation.config import CameraConfig, Config
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.runner import enroll_scenario_people, render_cached
from processor.frames import Frame
from processor.service import Processor
from processor.stages.door_faces import FaceStage
from processor.stages.faces import FaceDetector, FaceEmbedder, align


# the stages whose model calls the profile times (faces: detection with alignment and the quality gate;
# embed: the embedder)
FACE_STAGES = ("faces", "embed")


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
    window_s: float  # the measured window's length
    mean_batch: float
    latencies_s: list[float]
    dropped: int
    decoded: int
    embed_share: float  # embedded faces / faces that passed the quality gate
    thumbnails: list[np.ndarray]  # of every frame the face stage analysed in the window, in order
    analysed: list[tuple[str, float]]  # (camera, stream time) of those frames, in the same order
    offered_frames_per_s: float  # frames the streams put into the buffers in the window (analysed or shed)
    offered: list[tuple[str, float]]  # (camera, stream time) of each of those frames
    profile: dict  # where the window's time went: model calls' share of it, ms a call, cores the process used


def offered_frames(stats: dict) -> int:
    """Frames the cameras have put into their buffers (sampled at the analysis rate), analysed or shed."""
    return sum(s.get("analysed", 0) for s in stats.values())


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A few hundred pixels of a frame, enough to find it again among the video's frames."""
    return image[::40, ::40].astype(np.int16)


def recording(stage, thumbnails: list[np.ndarray], times: list[tuple[str, float]], on: list[bool]):
    """The stage's process, noting a thumbnail and the (camera, stream time) of every frame it analyses
    while ``on[0]``."""
    process = stage.process

    def recorded(batch, *args, **kwargs):
        if on[0]:
            thumbnails.extend(thumbnail(frame.image) for frame in batch)
            times.extend((frame.camera_id, frame.pts_s) for frame in batch)
        return process(batch, *args, **kwargs)
    return recorded


def recording_offered(buffers: dict, offered: list[tuple[str, float]], on: list[bool]) -> None:
    """Each camera buffer's put, noting the (camera, stream time) of every frame put while ``on[0]``
    (analysed or shed): nothing that costs the decoder thread more than an append."""
    for buffer in buffers.values():
        put = buffer.put

        def recorded(frame, put=put):
            if on[0]:
                offered.append((frame.camera_id, frame.pts_s))
            put(frame)
        buffer.put = recorded


def video_thumbnails(video: Path) -> np.ndarray:
    with av.open(str(video)) as container:
        return np.stack([thumbnail(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)])


def matched_indices(thumbs: np.ndarray, thumbnails: list[np.ndarray]) -> list[int]:
    """The index of the video frame closest to each thumbnail."""
    return [int(np.argmin(np.abs(thumbs - t).sum(axis=(1, 2, 3)))) for t in thumbnails]


def offered_indices(analysed: list[tuple[str, float]], analysed_at: list[int], offered: list[tuple[str, float]],
                    frames: int, fps: float) -> tuple[list[int], float]:
    """The video frame of each offered frame, from its stream time: each camera's stream plays the looping
    video with steady stream times, so frame = (round(time x fps) + shift) mod frames, with the camera's
    shift read off the frames it analysed (found by thumbnail). Also the share of analysed frames the
    shifts place where their thumbnails were found (how far the rule holds; 1.0: everywhere)."""
    votes: dict[str, dict[int, int]] = {}
    for (camera, pts), index in zip(analysed, analysed_at):
        shift = (index - round(pts * fps)) % frames
        camera_votes = votes.setdefault(camera, {})
        camera_votes[shift] = camera_votes.get(shift, 0) + 1
    shifts = {camera: max(counts, key=counts.get) for camera, counts in votes.items()}
    agree = sum(votes[camera][shifts[camera]] for camera in shifts) / max(1, len(analysed))
    return [(round(pts * fps) + shifts[camera]) % frames for camera, pts in offered if camera in shifts], agree


def streamed(offered: list[tuple[str, float]], fps: float) -> list[tuple[str, float]]:
    """(camera, stream time) of every frame each camera's stream sent in the window: every frame time from
    its first to its last frame put into its buffer. An idle door decodes keyframes only, so the frames it
    put are not all it was sent; what it never decoded was offered all the same."""
    spans: dict[str, tuple[float, float]] = {}
    for camera, pts in offered:
        first, last = spans.get(camera, (pts, pts))
        spans[camera] = (min(first, pts), max(last, pts))
    return [(camera, first + k / fps) for camera, (first, last) in spans.items()
            for k in range(int(round((last - first) * fps)) + 1)]


def video_frames(video: Path, wanted: set[int]):
    """(index, BGR image) of the video's frames whose index is in ``wanted``, in video order, one at a time."""
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                yield index, frame.to_ndarray(format="bgr24")


def faces_on(stage, video: Path, order: list[int], batch: int = 8) -> int:
    """The faces the face stage finds on these video frames (each counted as often as it appears); the
    frames are decoded and analysed a batch at a time (a whole loop's frames would be ~2 GB as BGR)."""
    faces: dict[int, int] = {}
    part: list[tuple[int, np.ndarray]] = []
    for item in video_frames(video, set(order)):
        part.append(item)
        if len(part) == batch:
            faces.update(_count_faces(stage, part))
            part = []
    faces.update(_count_faces(stage, part))
    return sum(faces[i] for i in order)


def _count_faces(stage, part: list[tuple[int, np.ndarray]]) -> dict[int, int]:
    if not part:
        return {}
    results = stage.process([Frame("offered", i, float(i), 0.0, image) for i, image in part])
    return {i: len(result.faces) for (i, _), result in zip(part, results)}


def frames_in_order(video: Path, order: list[int], limit: int = 300) -> list[np.ndarray]:
    """The video frames at the indices ``order`` (those the pipeline analysed, or the streams sent), in that
    order and in its proportions (at most ``limit`` distinct ones)."""
    distinct = sorted(set(order))
    if len(distinct) > limit:
        keep = set(distinct[i] for i in np.linspace(0, len(distinct) - 1, limit).round().astype(int))
        order = [i for i in order if i in keep]
    images = dict(video_frames(video, set(order)))
    return [images[i] for i in order]


async def measure_pipeline(config: Config, state, database_url: str, door_video: Path, streams: int,
                           seconds: float, warmup_s: float) -> PipelineFigures:

    run_id = uuid.uuid4().hex[:6]
    mounts = {f"/bench-{run_id}-{i}/door": door_video for i in range(streams)}
    stack.change_rtsp_mounts(add=mounts)
    room = config.rooms[0].id if config.rooms else "bench"
    cameras = [CameraConfig(id=f"bench-door-{i}", url=state.rtsp_url(mount.lstrip("/")), role="door", room=room,
                            analysis_fps=10) for i, mount in enumerate(mounts)]
    # cameras switched on at different moments, as on a campus (see switch_on)
    await asyncio.to_thread(switch_on, [camera.url for camera in cameras], frame_period_s=0.1)
    bench_config = config.model_copy(update={"cameras": cameras, "doors": []})
    processor = Processor(bench_config, database_url=database_url, kafka_bootstrap_servers=state.kafka_bootstrap_servers)
    try:
        await processor.start()
        await asyncio.sleep(warmup_s)
        stage = processor.face_stage
        thumbnails: list[np.ndarray] = []
        recording_on = [True]
        analysed: list[tuple[str, float]] = []
        stage.process = recording(stage, thumbnails, analysed, recording_on)
        offered: list[tuple[str, float]] = []
        recording_offered(processor.ingest.buffers(), offered, recording_on)
        faces0 = sum(stage.gate_reasons.values())
        accepted0 = stage.gate_reasons.get("accepted", 0)
        embedded0 = processor.recognition.faces_embedded
        frames0, batches0 = processor.batcher.frames, processor.batcher.batches
        latencies0 = len(processor.recognition.latencies_s)
        offered0 = offered_frames(processor.ingest.stats())
        counters0 = profile_counters(FACE_STAGES)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        recording_on[0] = False
        elapsed = time.perf_counter() - started
        profile = window_profile(counters0, profile_counters(FACE_STAGES), elapsed)
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
    return PipelineFigures(faces_per_s=faces / elapsed, frames_per_s=frames / elapsed, window_s=elapsed,
                           mean_batch=frames / batches,
                           latencies_s=latencies, dropped=sum(s.get("dropped", 0) for s in stats.values()),
                           decoded=sum(s.get("decoded", 0) for s in stats.values()),
                           embed_share=min(1.0, embedded / accepted) if accepted else 1.0,
                           thumbnails=thumbnails, offered_frames_per_s=(offered_frames(stats) - offered0) / elapsed,
                           analysed=analysed, offered=offered, profile=profile)


def bench_faces(config: Config, *, streams: int, seconds: float, say=lambda _m: None) -> dict:
    spec, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    state, _ = start_embedded_stack(config)
    # Its own database and topics: no enrolment or message of another run can refuse or skew it.
    with run_space(config, state.database_url, state.kafka_bootstrap_servers, kind="bench") as space:
        asyncio.run(enroll_scenario_people(spec, space.config, space.database_url, say))
        say(f"pipeline: {streams} RTSP stream(s) of {rendered.door_video.name} for {seconds:g} s")
        pipeline = asyncio.run(measure_pipeline(space.config, state, space.database_url, rendered.door_video,
                                                streams, seconds, warmup_s=4.0))
    # The same frames, in memory: those the pipeline analysed in its window.
    thumbs = video_thumbnails(rendered.door_video)
    analysed_at = matched_indices(thumbs, pipeline.thumbnails)
    frames = frames_in_order(rendered.door_video, analysed_at)
    pack = config.models.pack
    stage = FaceStage(FaceDetector(pack, score_threshold=config.thresholds.face_detection, input_size=None),
                      config.thresholds)
    batch = max(1, int(round(pipeline.mean_batch)))
    say(f"ceiling: the models alone at batch {batch}, embedding {pipeline.embed_share:.0%} of accepted faces, "
        f"for {seconds / 2:g} s")
    ceiling = measure_ceiling(stage, FaceEmbedder(pack), frames, batch, seconds / 2, pipeline.embed_share)
    # What the streams sent in the window, decoded or not (placed in the video by stream time).
    sent = streamed(pipeline.offered, float(spec.fps))
    order, placed = offered_indices(pipeline.analysed, analysed_at, sent, len(thumbs), float(spec.fps))
    # The naive script analyses every frame it is sent (it cannot know which frames are empty without
    # looking), in the streams' proportions; the ceiling did the pipeline's own work, on its frames.
    say(f"naive: per frame, per face, on the frames the streams sent, for {seconds / 2:g} s")
    naive = measure_naive(pack, config.thresholds, frames_in_order(rendered.door_video, order), seconds / 2)
    pct = percentiles_ms(pipeline.latencies_s)
    faces_per_frame = pipeline.faces_per_s / pipeline.frames_per_s if pipeline.frames_per_s else 0.0
    # No pipeline analyses more faces than its streams offer: the ceiling for this work is the models' rate
    # or the offered rate, whichever is lower. The offered faces are counted: the face stage run on every
    # frame the streams sent in the window.
    say(f"offered: counting the faces on the {len(order)} frames the streams sent")
    offered = faces_on(stage, rendered.door_video, order) / pipeline.window_s
    # The estimate of earlier versions (every frame put into a buffer at the analysed frames' faces a frame),
    # kept beside it: a saturated pipeline sheds mostly the extra frames of doors with a face in view, so it
    # came out low.
    estimated = pipeline.offered_frames_per_s * faces_per_frame
    bound = min(ceiling, offered) if offered else ceiling

    return {
        "streams": streams,
        "seconds": seconds,
        "pipeline_faces_per_s": round(pipeline.faces_per_s, 2),
        "pipeline_frames_per_s": round(pipeline.frames_per_s, 2),
        "mean_batch": round(pipeline.mean_batch, 2),
        "embed_share": round(pipeline.embed_share, 3),
        "ceiling_faces_per_s": round(ceiling, 2),
        "naive_faces_per_s": round(naive, 2),
        "offered_frames_per_s": round(pipeline.offered_frames_per_s, 2),  # put into the buffers (decoded)
        "sent_frames_per_s": round(len(sent) / pipeline.window_s, 2),
        "offered_faces_per_s": round(offered, 2),
        "offered_faces_per_s_estimated": round(estimated, 2),
        "offered_placed": round(placed, 3),
        "offered_unplaced": len(sent) - len(order),  # of cameras that analysed nothing: not counted
        "ratio_ceiling": round(pipeline.faces_per_s / bound, 3) if bound else None,
        "ratio_model_ceiling": round(pipeline.faces_per_s / ceiling, 3) if ceiling else None,
        "ratio_naive": round(pipeline.faces_per_s / naive, 3) if naive else None,
        # the most ratio_naive can be here: a pipeline that analyses every face the streams offer
        "ratio_naive_reachable": round(offered / naive, 3) if naive and offered else None,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "events": len(pipeline.latencies_s),
        "frames_dropped": pipeline.dropped,
        "frames_decoded": pipeline.decoded,
        "faces_per_frame": round(faces_per_frame, 3) if pipeline.frames_per_s else None,
        "profile": pipeline.profile,
        "latency_note": "capture of the deciding frame to the event handed to the publisher",
    }
