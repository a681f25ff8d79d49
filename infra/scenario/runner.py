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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infra.devstack import stack
from infra.devstack.cpu_load import CpuLoad, check_cores
from infra.foundation.errors import RollcallError
from infra.devstack.interrupt import run_interruptibly
from infra.foundation.paths import scenarios_dir
from infra.devstack.run_space import close_space, open_space, sweep
from infra.scenario.check import iou as box_iou
from infra.foundation.config import Config
from infra.scenario.render import render
from infra.scenario.spec import load_spec
from infra.scenario.spec import display_path
from infra.devstack.stack import start_embedded_stack
from processor.pipeline import Processor
from infra.foundation import db
from infra.scenario.attendance import scenario_attendance
from processor.enroll import enroll_photos
from schemas.events import MalformedEvent, decode
from infra.scenario.attendance import score_attendance

log = logging.getLogger("rollcall.scenario")



def render_cached(spec_path: Path):
    """Render a spec into var/scenarios/<name>/ (no work when the render is up to date)."""

    spec = load_spec(spec_path)
    return spec, render(spec_path, scenarios_dir() / spec.name)


def demo_mounts(config: Config, *, render_missing: bool = True) -> dict[str, Path]:
    """RTSP mounts for the scenarios the config serves: /<name>/door and /<name>/room."""
    mounts: dict[str, Path] = {}
    for entry in config.stack.scenarios:
        spec_path = config.resolve_path(entry)
        if render_missing:
            spec, _ = render_cached(spec_path)
            name = spec.name
        else:

            name = load_spec(spec_path).name
        folder = scenarios_dir() / name
        for camera in ("door", "room"):
            video = folder / f"{camera}.ts"
            if video.exists():
                mounts[f"/{name}/{camera}"] = video
    return mounts


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
                 load: float = 0.0) -> dict:
    """Run the system once over the scenario and score it. The run works in a database and topics of its
    own (removed at the end), so nothing an earlier run left (enrolments, bad messages) reaches it; with
    ``load`` > 0 a CPU hog of that many cores runs beside the system for the whole run."""

    say = progress or (lambda _message: None)
    spec_path = Path(spec_path)
    door = scenario_door(config, load_spec(spec_path))  # fail fast, before any rendering
    check_cores(load)
    spec, rendered = render_cached(spec_path)
    name = spec.name
    folder = scenarios_dir() / name
    say(f"scenario {name}: {'cached render' if rendered.cached else 'rendered'} in {folder}")

    # A run-specific mount path starts the looping media afresh for this run's clients; only this run's
    # mounts are added and removed (other runs may share the stack).
    run_id = uuid.uuid4().hex[:8]
    run_mounts = {f"/run-{run_id}/{camera}": folder / f"{camera}.ts" for camera in ("door", "room")}
    state, _ = start_embedded_stack(config)
    stack.change_rtsp_mounts(add={**demo_mounts(config, render_missing=False), **run_mounts})
    say(f"stack up: postgres {state.database_url}, kafka {state.kafka_bootstrap_servers}")
    swept = sweep(state.database_url, state.kafka_bootstrap_servers)
    if swept:
        say(f"removed what killed runs left: {', '.join(swept)}")
    urls = {door.door_camera: state.rtsp_url(f"run-{run_id}/door"), door.room_camera: state.rtsp_url(f"run-{run_id}/room")}
    camera_config = config.model_copy(update={
        "cameras": [c.model_copy(update={"url": urls.get(c.id, c.url), "enabled": c.id in urls}) for c in config.cameras],
    })
    try:
        space = open_space(camera_config, state.database_url, state.kafka_bootstrap_servers)
        try:
            say(f"run {space.tag}: database {space.database}, topics *.{space.tag} (removed at the end)")
            with CpuLoad(load, max_seconds=spec.duration_s + 600) as hog:
                if load:
                    say(f"CPU load: {load:g} core(s) in {len(hog.pids)} process(es) beside the system")
                outcome = run_interruptibly(_run_system(spec, space.config, door, space.database_url,
                                                  state.kafka_bootstrap_servers, say))
        finally:
            left_behind = close_space(space)
    finally:
        stack.change_rtsp_mounts(remove=run_mounts)
    report = _report(spec, spec_path, rendered.ground_truth, outcome)
    report["load"] = hog.report()
    report["run"] = {"id": space.tag, "database": space.database, "topic_suffix": f".{space.tag}",
                     "left_behind": left_behind}
    return report


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
    attendance_rows: list[dict] | None = None  # the scenario session's attendance (infra.scenario.attendance)
    room_tracking: dict | None = None  # room camera -> its tracking rate against its minimum (tracking_rate)


async def _play(spec, config: Config, cameras: tuple[str, str], database_url: str, bootstrap: str, say):
    """The processor on the run's cameras for one loop of the videos; (processor, ingest stats)."""

    processor = Processor(config, database_url=database_url, kafka_bootstrap_servers=bootstrap)
    deadline = spec.duration_s + 20  # a live stream: one loop of the video takes duration_s of wall time
    try:
        await processor.start()
        say(f"processor on {', '.join(f'{c} <- {config.camera(c).url}' for c in cameras)} ({spec.duration_s:g} s)")
        started = time.monotonic()
        while time.monotonic() - started < deadline:
            stats = processor.ingest.stats()
            if all(stats.get(c, {}).get("decoded", 0) >= spec.n_frames for c in cameras):
                break
            await asyncio.sleep(0.25)
        stats = processor.ingest.stats()
    finally:
        await processor.stop()  # ends open tracks (exit events) and flushes the publisher
    return processor, stats


async def _run_system(spec, config: Config, door, database_url: str, bootstrap: str, say) -> RunOutcome:

    await db.load_topology(database_url, config)
    await enroll_scenario_people(spec, config, database_url, say)
    recognitions = await TopicReader.start(bootstrap, config.kafka.topics.recognitions.name)
    presence = None
    cameras = (door.door_camera, door.room_camera)
    try:
        presence = await TopicReader.start(bootstrap, config.kafka.topics.presence.name)
        processor, stats = await _play(spec, config, cameras, database_url, bootstrap, say)
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
                      review_written=processor.review.written if processor.review is not None else None)


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
    import asyncpg


    people = [a for a in spec.arrivals if a.enrolled]
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


class TopicReader:
    """Reads a topic from its current end (no consumer group: a pure observer)."""

    def __init__(self, consumer, topic: str):
        self.consumer = consumer
        self.topic = topic

    @classmethod
    async def start(cls, bootstrap: str, topic: str) -> "TopicReader":
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="latest")
        await consumer.start()
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.stop()
            raise RollcallError(f"topic {topic} does not exist on {bootstrap}: run `rollcall up` to create it")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)  # pin the end now, before the processor publishes
        return cls(consumer, topic)

    async def read_all(self, timeout_s: float = 30.0, quiet_s: float = 1.5) -> list[dict]:
        """Everything published since ``start``, read until the topic has been quiet for ``quiet_s``
        (call it once the producers of interest have flushed; ``timeout_s`` bounds it when others keep
        writing). Not bounded by end offsets: the bundled broker's ListOffsets(latest) answers the last
        batch's base offset + 1, which would cut the last batch (the exit events) off."""

        events: list[dict] = []
        try:
            deadline = time.monotonic() + timeout_s
            quiet_since = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
                batches = await self.consumer.getmany(timeout_ms=300)
                if any(batches.values()):
                    quiet_since = time.monotonic()
                for records in batches.values():
                    for record in records:
                        try:
                            events.append(decode(self.topic, record.value))
                        except MalformedEvent as exc:
                            log.warning("malformed event on %s: %s", self.topic, exc)
            return events
        finally:
            await self.consumer.stop()

    async def close(self) -> None:
        await self.consumer.stop()  # a no-op when already stopped


def score_recognitions(events: list[dict], truth: dict) -> dict:
    """Door recognitions against the ground truth, by identity.

    Each enrolled person must give exactly one event with their id, each visitor exactly one
    ``unknown`` event, and no event may carry the id of someone who did not pass the door.
    """
    people = truth.get("people", [])
    enrolled = [p["id"] for p in people if p.get("enrolled")]
    visitors = [p["id"] for p in people if not p.get("enrolled")]
    by_person: dict[str, int] = {}
    unknown = 0
    for event in events:
        if event.get("person_id"):
            by_person[event["person_id"]] = by_person.get(event["person_id"], 0) + 1
        else:
            unknown += 1
    recognised = [pid for pid in enrolled if by_person.get(pid, 0) >= 1]
    wrong = sorted(pid for pid in by_person if pid not in enrolled)
    duplicates = sum(max(0, n - 1) for pid, n in by_person.items() if pid in enrolled)
    visitors_unknown = min(unknown, len(visitors))
    passages = len(enrolled) + len(visitors)
    correct = len(recognised) + visitors_unknown
    return {
        "passages": passages,
        "events": len(events),
        "correct": correct,
        "accuracy": round(correct / passages, 4) if passages else None,
        "recognised": recognised,
        "missed": [pid for pid in enrolled if pid not in recognised],
        "wrong_ids": wrong,
        "duplicates": duplicates,
        "unknown_events": unknown,
        "visitors": len(visitors),
        "one_event_per_passage": len(events) == passages and duplicates == 0 and not wrong,
    }


def score_handoff(presence: list[dict], truth: dict, room_origin: float | None, *, tolerance_s: float = 0.3,
                  min_iou: float = 0.3) -> dict:
    """Room tracks against the ground truth. Each track is the arrival its boxes overlap best over its life:
    every presence event's box (the first sighting's on ``enter``) votes for the person whose ground-truth
    box (sampled every 0.5 s, interpolated; within ``tolerance_s`` of a sample) overlaps it best, at least
    ``min_iou``; most votes wins, a tie goes to the first box's vote. (The first box alone misread side-by-side
    arrivals: the partner's first box overlaps both people, and a visitor's track was taken for a student's
    second one.) Its identity is the last one its presence events gave it. ``accuracy`` = tracks of
    enrolled people with that person's identity / all tracks of enrolled people (a person whose track was
    split counts every piece); a visitor's track must stay unknown."""
    tracks: dict[str, dict] = {}
    for event in sorted(presence, key=lambda e: e["published_at"]):
        track = tracks.setdefault(event["track_id"], {"first_seen": event["first_seen"], "person_id": None,
                                                      "source": "none", "ambiguous": False, "box": event["box"],
                                                      "kinds": [], "boxes": []})
        if event["kind"] == "enter":
            track["box"] = event["box"]
            track["boxes"].append((event["first_seen"], event["box"]))
        else:
            track["boxes"].append((event["frame_time"], event["box"]))
        track["kinds"].append(event["kind"])
        track["person_id"] = event["person_id"]
        track["source"] = event["identity_source"]
        track["ambiguous"] = track["ambiguous"] or event["ambiguous"]
    people = truth.get("people", [])
    if room_origin is None or not tracks:
        return {"tracks": len(tracks), "accuracy": None, "reason": "no room tracks" if not tracks else "no room frames"}
    owner: dict[str, str | None] = {}  # track id -> arrival id (None: matches nobody)
    for track_id, track in tracks.items():
        track["video_t"] = round(dt.datetime.fromisoformat(track["first_seen"]).timestamp() - room_origin, 2)
        votes = [_arrival_at(people, box, dt.datetime.fromisoformat(at).timestamp() - room_origin,
                             tolerance_s, min_iou) for at, box in track["boxes"]]
        counts = Counter(v for v in votes if v is not None)
        best = max(counts.values(), default=0)
        leaders = [pid for pid, n in counts.items() if n == best]
        owner[track_id] = votes[0] if votes and votes[0] in leaders else (leaders[0] if leaders else None)
    enrolled = {p["id"] for p in people if p.get("enrolled")}
    by_person: dict[str, list[str]] = {}
    for track_id, pid in owner.items():
        if pid is not None:
            by_person.setdefault(pid, []).append(track_id)
    enrolled_tracks = [t for t, pid in owner.items() if pid in enrolled]
    correct = [t for t in enrolled_tracks if tracks[t]["person_id"] == owner[t]]
    return {
        "tracks": len(tracks),
        "enrolled_tracks": len(enrolled_tracks),
        "accuracy": round(len(correct) / len(enrolled_tracks), 4) if enrolled_tracks else None,
        "correct": sorted({owner[t] for t in correct}),
        # arrival id -> the identities its tracks ended with (None: stayed unknown)
        "wrong": {owner[t]: tracks[t]["person_id"] for t in enrolled_tracks if t not in correct},
        "tracks_per_person": {pid: len(ids) for pid, ids in sorted(by_person.items())},
        "identity_sources": {owner[t] or t: tracks[t]["source"] for t in tracks},
        "reacquired": sorted(owner[t] or t for t in tracks if "reacquired" == tracks[t]["source"]),
        "unmatched_arrivals": [p["id"] for p in people if p["id"] not in by_person],
        "unmatched_tracks": sum(1 for pid in owner.values() if pid is None),
        "visitors_given_an_identity": {owner[t]: tracks[t]["person_id"] for t in tracks
                                       if owner[t] is not None and owner[t] not in enrolled
                                       and tracks[t]["person_id"] is not None},
        "ambiguous_tracks": sum(1 for t in tracks.values() if t["ambiguous"]),
        # every room track, in order of appearance: who it was, when (video s), where, what it ended with
        "track_list": [{"track_id": t, "arrival": owner[t], "first_seen_s": tracks[t]["video_t"],
                        "foot": [round((tracks[t]["box"]["x1"] + tracks[t]["box"]["x2"]) / 2), round(tracks[t]["box"]["y2"])],
                        "person_id": tracks[t]["person_id"], "identity_source": tracks[t]["source"],
                        "events": "".join(k[0] for k in tracks[t]["kinds"])}
                       for t in sorted(tracks, key=lambda t: tracks[t]["video_t"])],
    }


def _arrival_at(people: list[dict], box: dict, video_t: float, tolerance_s: float, min_iou: float) -> str | None:
    """The person whose ground-truth box at ``video_t`` overlaps ``box`` best (at least ``min_iou``), or None."""
    best, best_iou = None, min_iou
    for person in people:
        truth_box = _box_at(person["room"].get("track", []), video_t, tolerance_s)
        if truth_box is None:
            continue
        iou = box_iou((box["x1"], box["y1"], box["x2"] - box["x1"], box["y2"] - box["y1"]), truth_box)
        if iou > best_iou:
            best, best_iou = person["id"], iou
    return best


def _box_at(samples: list[dict], t: float, tolerance_s: float):
    """The ground-truth box [x, y, w, h] at video time t, interpolated between the samples around it
    (people walk ~100 px between samples); None when the person is not in view then."""
    before = [s for s in samples if s["t"] <= t]
    after = [s for s in samples if s["t"] >= t]
    if before and after:
        a, b = before[-1], after[0]
        if b["t"] - a["t"] <= 1.0 + 1e-6:  # a gap: hidden (or gone) in between
            w = 0.0 if b["t"] == a["t"] else (t - a["t"]) / (b["t"] - a["t"])
            return [pa + w * (pb - pa) for pa, pb in zip(a["box"], b["box"])]
    nearest = min(samples, key=lambda s: abs(s["t"] - t), default=None)
    if nearest is None or abs(nearest["t"] - t) > tolerance_s:
        return None
    return nearest["box"]


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(np.array(values) * 1000.0, q)), 1)


def _report(spec, spec_path: Path, truth: dict, outcome: RunOutcome) -> dict:
    door_decoded = int(outcome.door.get("decoded", 0))
    room_decoded = int(outcome.room.get("decoded", 0))
    if door_decoded == 0 and room_decoded == 0:
        raise RollcallError(f"scenario {spec.name}: no camera stream could be decoded "
                            f"(door: {outcome.door.get('last_error')}, room: {outcome.room.get('last_error')}); "
                            "see `rollcall status`")
    handoff = score_handoff(outcome.presence, truth, outcome.room_origin)
    recognition = score_recognitions(outcome.events, truth)
    recognition["latency_p50_ms"] = _percentile_ms(outcome.latencies_s, 50)
    recognition["latency_p95_ms"] = _percentile_ms(outcome.latencies_s, 95)
    recognition["quality_gate"] = outcome.gate
    recognition["review_queue_written"] = outcome.review_written

    attendance = score_attendance(outcome.attendance_rows, truth)
    not_measured = {f"attendance.{k}": attendance.get("reason", "") for k in ("precision", "recall")
                    if attendance[k] is None}
    if handoff["accuracy"] is None:
        not_measured["handoff.accuracy"] = handoff.get("reason", "no room tracks of enrolled people")
    return {
        "scenario": spec.name,
        "spec": str(spec_path),
        "attendance": attendance,
        "handoff": handoff,
        "events": {"recognitions": len(outcome.events), "presence": len(outcome.presence)},
        "recognition": recognition,
        "frames": {
            "decoded": door_decoded + room_decoded,
            "expected": 2 * spec.n_frames,
            "per_camera": {
                stats.get("camera_id", role): {
                    "role": role, "decoded": stats.get("decoded", 0), "analysed": stats.get("analysed"),
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
