"""`rollcall scenario run`: render a scenario (cached), serve it over RTSP from the embedded stack,
run the system on it, and score the results against the ground truth.

What the system can do grows issue by issue; a score this run cannot measure yet is ``null`` with
the reason under ``not_measured``, never a made-up number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import asyncpg
import numpy as np

from infra.devstack import stack
from infra.devstack.cpu_load import CpuLoad, check_cores
from infra.devstack.interrupt import run_interruptibly
from infra.devstack.run_space import RunSpace, close_space, open_space, sweep
from infra.devstack.stack import start_embedded_stack
from infra.foundation import db
from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from infra.foundation.camera_urls import resolve_camera_url
from infra.foundation.paths import scenarios_dir
from infra.scenario.attendance import scenario_attendance, score_attendance
from infra.scenario.group_run import play_group
from infra.scenario.topic_reader import TopicReader
from infra.scenario.mounts import demo_mounts, render_cached
from infra.scenario.scores import score_handoff, score_recognitions
from infra.scenario.spec import display_path, load_spec
from processor.enroll import enroll_photos
from processor.service import Processor

log = logging.getLogger("rollcall.scenario")


def scenario_door(config: Config, spec):
    """The configured door of the scenario's session room: its cameras play the rendered videos."""
    room = spec.raw.session.room
    for door in config.doors:
        if door.room == room:
            return door
    raise RollcallError(
        f"{spec_display(spec)}: session.room {room!r} has no door in the config {config.source}: "
        "add a [[doors]] entry for that room or run with a config that has one"
    )


def spec_display(spec) -> str:
    return display_path(spec.path)


def run_scenario(spec_path: Path, *, config: Config, progress: Callable[[str], None] | None = None,
                 load: float = 0.0, processors: int = 1, kill_at: float | None = None, kill_role: str = "room") -> dict:
    """Run the system once over the scenario and score it. The run works in a database and topics of its
    own (removed at the end), so nothing an earlier run left (enrolments, bad messages) reaches it; with
    ``load`` > 0 a CPU hog of that many cores runs beside the system for the whole run. With ``processors``
    > 1 the processor runs as that many processes in one group (infra/scenario/group_run.py), one of them
    SIGKILLed ``kill_at`` seconds into the video when given; the report gains ``failover``."""
    if processors < 1 or (kill_at is not None and (processors < 2 or kill_at < 0)):
        raise RollcallError("--kill-one-at needs --processors 2 or more (someone must take the cameras over) "
                            "and a time of 0 s or more")

    say = progress or (lambda _message: None)
    spec_path = Path(spec_path)
    door = scenario_door(config, load_spec(spec_path))  # fail fast, before any rendering
    check_cores(load)
    spec, rendered = render_cached(spec_path)
    name = spec.name
    folder = scenarios_dir() / name
    say(f"scenario {name}: {'cached render' if rendered.cached else 'rendered'} in {folder}")

    videos = {camera: folder / f"{camera}.ts" for camera in ("door", "room")}

    def system(space, state):
        group = (processors, kill_at, kill_role, space.tag) if processors > 1 else None
        return _run_system(spec, space.config, door, space.database_url, state.kafka_bootstrap_servers, say,
                           group=group)

    played = run_on_stack(config, videos, {door.door_camera: "door", door.room_camera: "room"}, load=load,
                          max_seconds=spec.duration_s + 600, say=say, system=system)
    outcome, hog, space, left_behind = played.outcome, played.hog, played.space, played.left_behind
    report = _report(spec, spec_path, rendered.ground_truth, outcome)
    report["load"] = hog
    if outcome.failover is not None:
        report["failover"] = outcome.failover
    report["run"] = {"id": space.tag, "database": space.database, "topic_suffix": f".{space.tag}",
                     "left_behind": left_behind}
    return report


@dataclass
class StackRun:
    outcome: object  # what ``system`` returned
    hog: dict  # the CPU hog's report (CpuLoad.report)
    space: RunSpace  # the run's own database and topics (removed by now)
    left_behind: list[str]  # what could not be removed


def run_on_stack(config: Config, videos: dict[str, Path], cameras: dict[str, str], *, load: float, max_seconds: float,
                 say: Callable[[str], None], system) -> StackRun:
    """Serve ``videos`` (mount name -> video file) from the embedded stack under mounts of this run only, point
    ``cameras`` (camera id -> mount name) at them (every other configured camera disabled), and run
    ``system(space, state)`` (a coroutine) in a database and topics of the run's own, with ``load`` cores of
    CPU hog beside it. Mounts, database and topics are removed at the end."""
    # A run-specific mount path starts the looping media afresh for this run's clients; only this run's
    # mounts are added and removed (other runs may share the stack).
    run_id = uuid.uuid4().hex[:8]
    run_mounts = {f"/run-{run_id}/{name}": video for name, video in videos.items()}
    state, _ = start_embedded_stack(config)
    stack.change_rtsp_mounts(add={**demo_mounts(config, render_missing=False), **run_mounts})
    say(f"stack up: postgres {state.database_url}, kafka {state.kafka_bootstrap_servers}")
    swept = sweep(state.database_url, state.kafka_bootstrap_servers)
    if swept:
        say(f"removed what killed runs left: {', '.join(swept)}")
    urls = {camera: state.rtsp_url(f"run-{run_id}/{name}") for camera, name in cameras.items()}
    camera_config = config.model_copy(update={
        "cameras": [c.model_copy(update={"url": urls.get(c.id, c.url), "enabled": c.id in urls}) for c in config.cameras],
    })
    try:
        space = open_space(camera_config, state.database_url, state.kafka_bootstrap_servers)
        try:
            say(f"run {space.tag}: database {space.database}, topics *.{space.tag} (removed at the end)")
            with CpuLoad(load, max_seconds=max_seconds) as hog:
                if load:
                    say(f"CPU load: {load:g} core(s) in {len(hog.pids)} process(es) beside the system")
                outcome = run_interruptibly(system(space, state))
        finally:
            left_behind = close_space(space)
    finally:
        stack.change_rtsp_mounts(remove=run_mounts)
    return StackRun(outcome, hog.report(), space, left_behind)


@dataclass
class RunOutcome:
    door: dict  # the processor's ingest stats for the door camera
    room: dict  # ... and for the room camera
    events: list[dict]  # this run's recognition events
    presence: list[dict]  # this run's presence events
    room_origin: float | None  # Unix time of the room video's first analysed frame
    latencies_s: list[float]
    gate: dict[str, int]
    review_written: int | None  # unknown-face crops written to the review queue (None: queue off)
    review_spoofs_written: int | None = None  # ... of which suspected spoofs (liveness 'suspect')
    attendance_rows: list[dict] | None = None  # the scenario session's attendance (infra.scenario.attendance)
    room_tracking: dict | None = None  # room camera -> its tracking rate against its minimum (tracking_rate)
    failover: dict | None = None  # with several processors (infra.scenario.group_run.failover_report)


async def play(spec, config: Config, cameras: tuple[str, str], database_url: str, bootstrap: str, say):
    """The processor on the run's cameras for one loop of the videos; (processor, ingest stats)."""

    processor = Processor(config, database_url=database_url, kafka_bootstrap_servers=bootstrap)
    deadline = spec.duration_s + 20  # a live stream: one loop of the video takes duration_s of wall time
    try:
        await processor.start()
        say(f"processor on {', '.join(f'{c} <- {config.camera(c).url}' for c in cameras)} ({spec.duration_s:g} s)")
        started = time.monotonic()
        while time.monotonic() - started < deadline:
            if processor.supervisor.failure is not None:  # a stage gave up: the run's scores would mean nothing
                raise processor.supervisor.failure
            stats = processor.ingest.stats()
            # one loop of the video read (an idle door decodes keyframes only: count its packets, not its frames)
            if all(stats.get(c, {}).get("packets", 0) >= spec.n_frames for c in cameras):
                break
            await asyncio.sleep(0.25)
        stats = processor.ingest.stats()
        restarted = {name: s["restarts"] for name, s in processor.supervisor.report().items() if s["restarts"]}
        if restarted:
            say(f"stage tasks restarted during the run: {restarted}")
    finally:
        await processor.stop()  # ends open tracks (exit events) and flushes the publisher
    return processor, stats


async def _run_system(spec, config: Config, door, database_url: str, bootstrap: str, say, *,
                      group: tuple | None = None) -> RunOutcome:

    await db.load_topology(database_url, config)
    await enroll_scenario_people(spec, config, database_url, say)
    if group is not None:
        return await _run_group_system(spec, config, door, database_url, bootstrap, say, *group)
    recognitions = await TopicReader.start(bootstrap, config.kafka.topics.recognitions.name)
    presence = None
    cameras = (door.door_camera, door.room_camera)
    try:
        presence = await TopicReader.start(bootstrap, config.kafka.topics.presence.name)
        processor, stats = await play(spec, config, cameras, database_url, bootstrap, say)
        # Keep only this processor's tracks (the topics are the run's own; this guards against a stray producer).
        face_runs = tuple(f"{t.camera_id}-{t.run_id}-" for t in processor.recognition.trackers.values())
        room_runs = tuple(f"{t.camera_id}-{t.run_id}-" for t in processor.room.trackers.values()) if processor.room else ()
        events = [e for e in await recognitions.read_all() if str(e.get("track_id", "")).startswith(face_runs)]
        moves = [e for e in await presence.read_all() if room_runs and str(e.get("track_id", "")).startswith(room_runs)]
    finally:  # an interrupted or failed run closes its readers too (read_all closed them otherwise)
        for reader in (recognitions, presence):
            if reader is not None:
                await reader.close()
    # The video's time 0 on the wall clock: the first analysed frame's capture time less its stream time
    # (frames before the first clean keyframe are skipped, so the first frame is not always frame 0).
    first = processor.room.first_frame.get(door.room_camera) if processor.room else None
    origin = first[0] - first[1] if first else None

    attendance_rows = await scenario_attendance(config, database_url, bootstrap, spec.raw.session, origin, say)
    room_tracking = None
    if processor.room is not None:
        room_tracking = {camera: tracking_rate(processor.room, config, config.camera(camera),
                                               stats.get(camera, {}).get("decoded", 0) / spec.fps)
                         for camera in cameras if config.camera(camera).role == "room"}
    return RunOutcome(door=stats.get(door.door_camera, {}), room=stats.get(door.room_camera, {}), events=events,
                      room_tracking=room_tracking,
                      presence=moves, room_origin=origin, attendance_rows=attendance_rows,
                      latencies_s=list(processor.recognition.latencies_s),
                      gate=dict(processor.face_stage.gate_reasons),
                      review_written=processor.review.written if processor.review is not None else None,
                      review_spoofs_written=processor.review.suspected_spoofs_written
                      if processor.review is not None else None)


async def _run_group_system(spec, config: Config, door, database_url: str, bootstrap: str, say, processors: int,
                            kill_at: float | None, kill_role: str, tag: str) -> RunOutcome:
    """The run on a processor group; what only an in-process processor can tell (quality gate reasons,
    the review queue, per-frame latencies) is left out of the report."""
    topics = config.kafka.topics
    readers = [await TopicReader.start(bootstrap, t.name) for t in (topics.recognitions, topics.presence,
                                                                    topics.processors)]
    cameras = {door.door_camera: config.camera(door.door_camera).url, door.room_camera: config.camera(door.room_camera).url}
    try:
        played = await play_group(spec, config, {c: resolve_camera_url(u) for c, u in cameras.items()}, database_url,
                                  bootstrap, say, processors=processors, kill_at=kill_at, kill_role=kill_role,
                                  log_dir=scenarios_dir() / spec.name / "runs" / tag, readers=readers)
    finally:
        for reader in readers:
            await reader.close()
    attendance_rows = await scenario_attendance(config, database_url, bootstrap, spec.raw.session, played.room_origin,
                                                say)
    latencies = [published_after(e) for e in played.events]
    return RunOutcome(door={"camera_id": door.door_camera, "analysed": played.frames[door.door_camera]},
                      room={"camera_id": door.room_camera, "analysed": played.frames[door.room_camera]},
                      events=played.events, presence=played.presence, room_origin=played.room_origin,
                      latencies_s=[x for x in latencies if x is not None], gate={}, review_written=None,
                      attendance_rows=attendance_rows, failover=played.failover)


def published_after(event: dict, captured: str = "last_seen") -> float | None:
    """Capture of the deciding frame (the event's ``captured`` time) to publication, from the event itself
    (clocks of one machine)."""
    try:
        published = dt.datetime.fromisoformat(event["published_at"].replace("Z", "+00:00"))
        decided = dt.datetime.fromisoformat(event[captured].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return None
    return (published - decided).total_seconds()


def tracking_rate(room_stage, config: Config, camera, video_s: float) -> dict:
    """A room camera's tracking against its minimum: frames its tracker analysed per second of video the
    camera delivered, beside the longest gap between them. ``met`` allows one frame short (the first
    frames before a clean keyframe are never analysed); null without a minimum."""
    tracked = room_stage.frames_tracked.get(camera.id, 0)
    minimum = getattr(config, "min_tracking_fps", None)  # the camera's own [[cameras]] min_tracking_fps, else
    min_fps = minimum(camera) if callable(minimum) else getattr(camera, "min_tracking_fps", None)  # the default
    achieved = tracked / video_s if video_s > 0 else None
    met = None
    if min_fps is not None and achieved is not None:
        met = tracked + 1 >= min_fps * video_s
    return {"tracked": tracked, "max_gap_s": round(room_stage.max_gap_s.get(camera.id, 0.0), 2),
            "video_s": round(video_s, 1), "achieved_fps": round(achieved, 2) if achieved is not None else None,
            "min_fps": min_fps, "met": met}


async def enroll_scenario_people(spec, config: Config, database_url: str, say) -> None:
    """Enrol the scenario's people from their enrolment photos (never the door photos), afresh."""
    people = [a for a in spec.arrivals if a.enrolled] + list(spec.absent)
    conn = await asyncpg.connect(database_url)
    try:
        # Start from their enrolment photos only: earlier runs or other scenarios must not help.
        await conn.execute("DELETE FROM face_enrolment WHERE person_id = ANY($1::text[]) AND model_pack = $2",
                           [p.id for p in people], config.models.pack)
    finally:
        await conn.close()
    for person in people:
        report = await enroll_photos(database_url, person.id, person.name, list(person.enroll), consent=True,
                                     consent_by=f"scenario {spec.name}", pack=config.models.pack,
                                     thresholds=config.thresholds, privacy=config.privacy)
        if not report.accepted:
            reasons = "; ".join(f"{r.path}: {r.reason}" for r in report.rejected)
            raise RollcallError(f"scenario {spec.name}: could not enrol {person.id} ({reasons})")
    say(f"enrolled {len(people)} people from their enrolment photos")


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.array(values) * 1000.0, q)), 1)


def _report(spec, spec_path: Path, truth: dict, outcome: RunOutcome) -> dict:
    door_decoded = int(outcome.door.get("decoded") or 0)
    room_decoded = int(outcome.room.get("decoded") or 0)
    if not (door_decoded or room_decoded or outcome.door.get("analysed") or outcome.room.get("analysed")):
        raise RollcallError(f"scenario {spec.name}: no camera stream could be decoded "
                            f"(door: {outcome.door.get('last_error')}, room: {outcome.room.get('last_error')}); "
                            "see `rollcall status`")
    handoff = score_handoff(outcome.presence, truth, outcome.room_origin)
    recognition = score_recognitions(outcome.events, truth)
    recognition["latency_p50_ms"] = _percentile_ms(outcome.latencies_s, 50)
    recognition["latency_p95_ms"] = _percentile_ms(outcome.latencies_s, 95)
    recognition["quality_gate"] = outcome.gate
    recognition["review_queue_written"] = outcome.review_written
    recognition["review_queue_suspected_spoofs"] = outcome.review_spoofs_written

    attendance = score_attendance(outcome.attendance_rows, truth)
    not_measured = {f"attendance.{k}": attendance.get("reason", "") for k in ("precision", "recall")
                    if attendance[k] is None}
    if handoff["accuracy"] is None:
        not_measured["handoff.accuracy"] = handoff.get("reason", "no room tracks of enrolled people")
    if outcome.failover is not None:  # a processor group: what lives only inside a processor's memory
        for key in ("recognition.quality_gate", "recognition.review_queue_written",
                    "recognition.review_queue_suspected_spoofs", "frames.received", "frames.decoded"):
            not_measured[key] = "kept inside each group member; the report reads the topics"
    return {
        "scenario": spec.name,
        "spec": str(spec_path),
        "attendance": attendance,
        "handoff": handoff,
        "events": {"recognitions": len(outcome.events), "presence": len(outcome.presence)},
        "recognition": recognition,
        "frames": {
            # received: the packets (a frame each) read from the streams; an idle door decodes keyframes only
            "received": int(outcome.door.get("packets") or 0) + int(outcome.room.get("packets") or 0),
            "decoded": door_decoded + room_decoded,
            "expected": 2 * spec.n_frames,
            "per_camera": {
                stats.get("camera_id", role): {
                    "role": role, "received": stats.get("packets"), "decoded": stats.get("decoded"),
                    "analysed": stats.get("analysed"),
                    "dropped": stats.get("dropped"), "reconnects": stats.get("reconnects"),
                    "error": stats.get("last_error")}
                for role, stats in (("door", outcome.door), ("room", outcome.room))
            },
            "room_tracking": outcome.room_tracking,
        },
        "ground_truth": {
            "people": len(truth.get("people", [])),
            "expected_present": truth.get("expected_present", []),
        },
        "not_measured": not_measured,
    }
