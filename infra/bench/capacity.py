"""`rollcall bench capacity`: how many door and room cameras this machine's processor keeps right.

Step k runs k copies of a scenario at once in ONE processor (one `rollcall run`, as one machine runs it in
production): each copy in a room of its own with its own door camera, room camera, course and enrolled people
(infra/scenario/copies.py), all served over RTSP from the embedded stack, in a database and topics of the run's
own (infra/scenario/runner.run_on_stack). Each copy is scored on its own against its own ground truth:
attendance precision and recall, and the delay from capture to publication of its door recognitions and its
room presence events. A step passes when every copy passes (with ``repeat``: in every run of the step);
steps go 1, 2, ... until one fails or ``max``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from infra.bench.capacity_scores import CRITERIA, score_copy
from infra.devstack.cpu_load import check_cores
from infra.foundation import db
from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from infra.foundation.paths import scenarios_dir
from infra.scenario.attendance import sessions_attendance
from infra.scenario.copies import IDENTITIES, ScenarioCopy, copies_config, copies_possible, load_identities, make_copies
from infra.scenario.mounts import render_cached
from infra.scenario.runner import enroll_scenario_people, play, run_on_stack, scenario_door, tracking_rate
from infra.scenario.spec import display_path, load_spec
from infra.scenario.topic_reader import TopicReader

DEFAULT_SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "default.toml"


@dataclass
class CopiesOutcome:
    """What one step's processor did, for every copy together (split by camera when scored)."""

    recognitions: list[dict]
    presence: list[dict]
    stats: dict[str, dict]  # camera id -> the processor's ingest stats
    origins: dict[int, float | None]  # copy index -> its room video's time 0 on the wall clock
    attendance: dict[int, list[dict] | None]  # copy index -> its session's attendance rows
    room_tracking: dict[str, dict]  # room camera -> tracking_rate
    door_latencies_s: list[float]  # the processor's own figures, all cameras together
    room_latencies_s: list[float]


def bench_capacity(config: Config, *, spec_path: Path = DEFAULT_SCENARIO, max_copies: int | None = None,
                   load: float = 0.0, all_steps: bool = False, repeat: int = 1, first: int = 1,
                   say: Callable[[str], None] = lambda _m: None) -> dict:
    """Steps of 1, 2, ... copies of the scenario until one fails (with ``all_steps``: on regardless) or
    ``max_copies`` (default: as many as the identity pool allows); the report (see the module). Each step
    runs ``repeat`` times and passes only when every run did. ``first``: start at that step (the smaller
    ones count as not run, so the answer is then 0 unless they are run)."""
    if max_copies is not None and max_copies < 1:
        raise RollcallError(f"--max {max_copies}: give 1 or more copies")
    if repeat < 1:
        raise RollcallError(f"--repeat {repeat}: give 1 or more runs a step")
    if first < 1 or (max_copies is not None and first > max_copies):
        raise RollcallError(f"--from {first}: give a step from 1 to --max")
    base = load_spec(spec_path)
    door = scenario_door(config, base)  # fail fast, before any rendering
    check_cores(load)
    count = max_copies if max_copies is not None else copies_possible(base, load_identities())
    if first > count:
        raise RollcallError(f"--from {first}: the identity pool allows {count} copies of this scenario at most")
    copies = make_copies(spec_path, config, count, door)
    truths = {}
    for copy in copies:
        spec, rendered = render_cached(copy.spec_path)
        truths[copy.index] = rendered.ground_truth
        say(f"copy {copy.index}: {spec.name} ({'cached render' if rendered.cached else 'rendered'})")
    steps = []
    for k in range(first, count + 1):
        runs = []
        for i in range(repeat):
            say(f"step {k}: {k} door + {k} room cameras in one processor"
                + (f" (run {i + 1} of {repeat})" if repeat > 1 else ""))
            runs.append(run_step(config, copies[:k], truths, load=load, say=say))
        step = combine_runs(runs)
        steps.append(step)
        say(f"step {k}: {'passed' if step['passed'] else 'FAILED: ' + '; '.join(step['failed'])}")
        if not step["passed"] and not all_steps:
            break
    best = largest_passed(steps)
    return {"door_streams": best, "room_streams": best, "answer": answer_note(steps, first, count, max_copies),
            "cpu_cores": os.cpu_count(), "device": device_of(config),
            "scenario": display_path(base.path), "max": count, "all_steps": all_steps, "load_cores": load,
            "repeat": repeat, "first_step": first,
            "criteria": CRITERIA,
            "identities": f"each copy's enrolled people are its own (from {display_path(IDENTITIES)}); the "
                          "scenario's visitors walk into every copy",
            "steps": steps}


def largest_passed(steps: list[dict]) -> int:
    """The largest step that passed with every smaller one (0 when step 1 failed or was not run)."""
    best = 0
    for step in steps:
        if step["copies"] != best + 1 or not step["passed"]:
            break
        best = step["copies"]
    return best


def answer_note(steps: list[dict], first: int, count: int, max_copies: int | None) -> str:
    """What ``door_streams`` / ``room_streams`` mean for a planner: a step that failed bounds them; when every
    step run passed they are only a floor (the identity pool or ``--max`` stopped the steps: the machine may
    carry more); with ``--from`` the smaller steps were not run, so nothing is claimed."""
    failed = next((step["copies"] for step in steps if not step["passed"]), None)
    if failed is not None:
        stop = f"step {failed} failed"
    elif max_copies is not None:
        stop = f"every step passed up to --max {max_copies}: this machine may carry more"
    else:
        stop = (f"every step passed up to {count}, the most copies the identity pool allows of this scenario: "
                "this machine may carry more")
    if first > 1:
        stop += f"; steps 1 to {first - 1} not run (--from {first}), so no figure is claimed"
    return stop


def combine_runs(runs: list[dict]) -> dict:
    """One step's runs as one step: it passes only when every run passed. One single-run step is returned
    as it is; with more runs, ``per_copy`` lists every run's copies (each with its ``repeat_run``, from 1),
    ``failed`` says which run missed what, the delays are the worst run's, and ``runs`` keeps each run whole.
    A single run of a step at the edge of the machine passes or fails by noise (seen at 4 + 4 on 2 cores:
    one arrival's handoff lost in some runs and not others), so a figure to plan with wants several."""
    if len(runs) == 1:
        return dict(runs[0], repeat=1, passed_runs=int(runs[0]["passed"]))
    first = runs[0]
    worst = {role: max((r["processor_latency_p95_ms"][role] for r in runs
                        if r["processor_latency_p95_ms"][role] is not None), default=None) for role in ("door", "room")}
    return {"copies": first["copies"], "doors": first["doors"], "rooms": first["rooms"],
            "passed": all(r["passed"] for r in runs), "repeat": len(runs),
            "passed_runs": sum(r["passed"] for r in runs),
            "failed": [f"run {i}: {reason}" for i, r in enumerate(runs, 1) for reason in r["failed"]],
            "per_copy": [dict(c, repeat_run=i) for i, r in enumerate(runs, 1) for c in r["per_copy"]],
            "processor_latency_p95_ms": worst, "load": first["load"],
            "run": {"id": [r["run"]["id"] for r in runs],
                    "left_behind": [x for r in runs for x in r["run"]["left_behind"]]},
            "runs": runs}


def run_step(config: Config, copies: list[ScenarioCopy], truths: dict[int, dict], *, load: float,
             say: Callable[[str], None]) -> dict:
    """One step: the copies at once in one processor, each scored on its own."""
    specs = {copy.index: load_spec(copy.spec_path) for copy in copies}
    videos, cameras = {}, {}
    for copy in copies:
        folder = scenarios_dir() / specs[copy.index].name
        for role, camera in (("door", copy.door_camera), ("room", copy.room_camera)):
            videos[f"c{copy.index}-{role}"] = folder / f"{role}.ts"
            cameras[camera] = f"c{copy.index}-{role}"
    duration = specs[1].duration_s

    def system(space, state):
        return _play_copies(copies, specs, space.config, space.database_url, state.kafka_bootstrap_servers, say)

    played = run_on_stack(copies_config(config, copies), videos, cameras, load=load, max_seconds=duration + 600,
                          say=say, system=system)
    outcome: CopiesOutcome = played.outcome
    enrolled = {copy.index: {a.id for a in specs[copy.index].arrivals if a.enrolled} for copy in copies}
    per_copy = []
    for copy in copies:
        others = set().union(*(ids for index, ids in enrolled.items() if index != copy.index))
        per_copy.append(score_copy(copy, specs[copy.index].name, truths[copy.index], outcome, others))
    failed = [f"copy {c['copy']}: {reason}" for c in per_copy for reason in c["failed"]]
    return {"copies": len(copies), "doors": len(copies), "rooms": len(copies), "passed": not failed,
            "failed": failed, "per_copy": per_copy,
            "processor_latency_p95_ms": {"door": _p95_ms(outcome.door_latencies_s),
                                         "room": _p95_ms(outcome.room_latencies_s)},
            "load": played.hog, "run": {"id": played.space.tag, "left_behind": played.left_behind}}


async def _play_copies(copies: list[ScenarioCopy], specs: dict, config: Config, database_url: str, bootstrap: str,
                       say) -> CopiesOutcome:
    """Enrol every copy's people, run one processor on every copy's cameras for one loop of the videos, read
    the events, and write each copy's attendance."""
    await db.load_topology(database_url, config)
    for copy in copies:
        await enroll_scenario_people(specs[copy.index], config, database_url, say)
    topics = config.kafka.topics
    readers = [await TopicReader.start(bootstrap, topics.recognitions.name)]
    try:
        readers.append(await TopicReader.start(bootstrap, topics.presence.name))
        cameras = tuple(c for copy in copies for c in (copy.door_camera, copy.room_camera))
        processor, stats = await play(specs[1], config, cameras, database_url, bootstrap, say)
        recognitions, presence = await readers[0].read_all(), await readers[1].read_all()
    finally:
        for reader in readers:
            await reader.close()
    room = processor.room
    origins = {}
    for copy in copies:
        first = room.first_frame.get(copy.room_camera) if room is not None else None
        origins[copy.index] = first[0] - first[1] if first else None
    rows = await sessions_attendance(config, database_url, bootstrap,
                                     [(specs[c.index].raw.session, origins[c.index]) for c in copies], say)
    fps = specs[1].fps
    tracking = {} if room is None else {
        c.room_camera: tracking_rate(room, config, config.camera(c.room_camera),
                                     stats.get(c.room_camera, {}).get("decoded", 0) / fps) for c in copies}
    return CopiesOutcome(recognitions, presence, stats, origins, {c.index: r for c, r in zip(copies, rows)}, tracking,
                         list(processor.recognition.latencies_s), list(room.latencies_s) if room is not None else [])


def _p95_ms(values: list[float]) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000.0, 95)), 1) if values else None


def device_of(config: Config) -> str:
    """The CPU, and the onnxruntime provider the processor's models run on (the same choice as
    processor.model_packs.create_session: the config's, else ROLLCALL_ORT_PROVIDERS, else the best there)."""
    available = ort.get_available_providers()
    env = [p.strip() for p in os.environ.get("ROLLCALL_ORT_PROVIDERS", "").split(",") if p.strip()]
    wanted = [p if isinstance(p, str) else p[0] for p in (config.models.providers or env)]
    wanted = wanted or [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    provider = (wanted or ["CPUExecutionProvider"])[0]
    return f"{_cpu_model()}, onnxruntime {provider}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"

