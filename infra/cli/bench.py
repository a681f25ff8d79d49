"""`rollcall bench ...`: benchmarks that print figures measured in one run: `faces`, `persons`, `precision`,
`tracking`, `trace` (the processor), `capacity` (the whole system on this machine), `writer` (the attendance writer)
and `dashboard` (the live feed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from infra.bench.capacity import DEFAULT_SCENARIO, bench_capacity
from infra.bench.dashboard import run_bench as run_dashboard_bench
from infra.bench.face_precision import bench_face_precision
from infra.bench.precision import bench_person_precision
from infra.bench import gpu as gpu_bench
from infra.bench.faces import bench_faces
from infra.bench.gpu_carry import prepare_carry
from infra.bench.persons import bench_persons
from infra.bench.trace_replay import format_report as format_trace_report
from infra.bench.trace_replay import replay_report
from infra.bench.tracking import bench_tracking, format_table, to_json
from infra.bench.writer import bench_writer as run_writer_bench
from infra.cli.support import config_of as _config
from infra.cli.support import print_figures, print_json, progress
from infra.cli.types import FiniteFloat
from infra.foundation.endpoints import resolve
from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir


@click.group()
def bench() -> None:
    """Benchmarks that print figures measured in one run (ratios against baselines of the same run)."""


# --- the processor --------------------------------------------------------------------------------


@bench.command("faces")
@click.option("--streams", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Concurrent RTSP door streams (10 fps each; on 2 CPU cores 8 are about what the "
                   "pipeline analyses whole, 16 saturate it).")
@click.option("--seconds", type=FiniteFloat(0, 3600, low_open=True), default=75.0, show_default=True,
              help="Measuring window of the pipeline (default: one whole loop of the default door video, so "
                   "every stream offers all of it, whatever moment it started at).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_faces_command(ctx: click.Context, streams: int, seconds: float, as_json: bool) -> None:
    """Face pipeline faces/s with N RTSP streams vs the model-only ceiling vs a naive per-face loop."""
    result = bench_faces(_config(ctx), streams=streams, seconds=seconds,
                         say=progress(as_json))
    print_figures(result, as_json)


@bench.command("persons")
@click.option("--streams", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Concurrent RTSP room streams (enough to saturate 2 CPU cores at 5 fps analysis).")
@click.option("--seconds", type=FiniteFloat(0, 3600, low_open=True), default=75.0, show_default=True,
              help="Measuring window of the pipeline (75: one loop of the room video, the arrivals and the "
                   "seated class; a room spends most of a lesson seated).")
@click.option("--fps", "analysis_fps", type=FiniteFloat(0, 120, low_open=True), default=5.0, show_default=True,
              help="Analysis rate of each room stream.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_persons_command(ctx: click.Context, streams: int, seconds: float, analysis_fps: float,
                          as_json: bool) -> None:
    """Room pipeline frames/s with N RTSP streams vs the detector-only ceiling vs a naive per-frame loop."""
    if streams < 1 or seconds <= 0 or analysis_fps <= 0:
        raise RollcallError("bench persons: --streams, --seconds and --fps must be positive")
    result = bench_persons(_config(ctx), streams=streams, seconds=seconds, analysis_fps=analysis_fps,
                           say=progress(as_json))
    print_figures(result, as_json)


@bench.command("precision")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Interleaved rounds over the same frames (fp32, then int8, each round).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_precision_command(ctx: click.Context, rounds: int, as_json: bool) -> None:
    """The room person detector at int8 against fp32 (the baseline, same run, same frames): ms a frame,
    speed-up, and the share of fp32 persons int8 finds too."""
    print_figures(bench_person_precision(_config(ctx), rounds=rounds, say=progress(as_json)), as_json)


@bench.command("face-precision")
@click.option("--rounds", type=click.IntRange(1, 100), default=7, show_default=True,
              help="Interleaved rounds over the same faces (fp32 and int8 in turns, each round).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_face_precision_command(ctx: click.Context, rounds: int, as_json: bool) -> None:
    """The face embedder at int8 against fp32 (the baseline, same run, same faces): ms a face at batch 1 and 8
    (medians over the rounds) and the speed-up."""
    print_figures(bench_face_precision(_config(ctx), rounds=rounds, say=progress(as_json)), as_json)


@bench.command("gpu", context_settings={"ignore_unknown_options": True})
@click.option("--prepare", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Only write the models folder to carry to a GPU machine, and say how to run it there.")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench_gpu_command(ctx: click.Context, prepare: Path | None, options: tuple[str, ...]) -> None:
    """Model stages' throughput at batch 1..64 on the best onnxruntime provider and streams per device
    (infra/bench/gpu.py, which also runs by itself on a bare GPU machine; `python3 infra/bench/gpu.py --help`
    lists the OPTIONS passed to it). Without --models it measures the configured pack, prepared under the cache."""
    config = _config(ctx)
    if prepare is not None:
        entries = prepare_carry(prepare, config.models.pack)
        size = sum((prepare / e["file"]).stat().st_size for e in entries) / 2**20
        click.echo(f"{prepare}: {len(entries)} models, {size:.1f} MiB. Carry it (a folder inside the repository, "
                   f"e.g. build/gpu-bench) and run from the repository root on the GPU machine: "
                   f"python3 infra/bench/gpu.py --models {prepare} --out $OUT/gpu-bench.json")
        return
    argv = list(options)
    if "--models" not in argv and not any(a.startswith("--models=") for a in argv):
        folder = cache_dir() / "gpu-bench" / config.models.pack
        prepare_carry(folder, config.models.pack)
        argv += ["--models", str(folder)]
    gpu_bench.main(argv, say=lambda line: click.echo(line, err=line.startswith(" ")))


@bench.command("tracking")
@click.argument("spec", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--fps", "rates", default="4,2,1", show_default=True, help="Analysis rates to replay, comma-separated.")
@click.option("--detect-budget", type=FiniteFloat(0, 86_400, low_open=True), default=None,
              help="Seconds of person detection at most in this call; what was done is kept for the next one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (every run).")
@click.pass_context
def bench_tracking_command(ctx: click.Context, spec: Path, rates: str, detect_budget: float | None,
                           as_json: bool) -> None:
    """Room tracking vs the scenario's ground truth (IDF1, HOTA, MOTA, tracks per person, door entries) on
    cached detections replayed at each analysis rate."""
    try:
        parsed = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        parsed = []
    if not parsed or any(not 0 < r <= 120 for r in parsed):  # "not 0 < r" also refuses nan
        raise RollcallError(f"bench tracking: --fps {rates!r} must be numbers above 0 and at most 120, "
                            "separated by commas")
    report = bench_tracking(spec, _config(ctx), parsed, say=progress(as_json), detect_budget_s=detect_budget)
    click.echo(to_json(report) if as_json else format_table(report))


@bench.command("trace")
@click.argument("trace", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--scenario", "spec", type=click.Path(dir_okay=False, readable=True, path_type=Path),
              help="Score the replay against this scenario's ground truth (the trace of its room camera).")
@click.option("--window", nargs=2, type=FiniteFloat(-1e9, 1e9), default=None, metavar="T0 T1",
              help="Print every traced frame between these stream times (s): detections, tracks, events.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench_trace_command(trace: Path, spec: Path | None, window: tuple[float, float] | None, as_json: bool) -> None:
    """Replay a room tracker's trace ([tracking] trace_dir) through this code's tracker: the same events or
    the first difference, and with --scenario the tracking scores and each person's tracks."""
    report = replay_report(trace, spec, window, say=lambda line: click.echo(line, err=as_json))
    if as_json:
        print_json(report)
    else:
        click.echo(format_trace_report(report))


# --- the whole system on this machine ---------------------------------------------------------------


@bench.command("capacity")
@click.option("--scenario", "spec", type=click.Path(dir_okay=False, readable=True, path_type=Path),
              default=DEFAULT_SCENARIO, show_default="infra/scenarios/default.toml",
              help="The scenario each copy plays.")
@click.option("--max", "max_copies", type=click.IntRange(1, 64), default=None,
              help="Most copies to try (steps 1, 2, ... N). Default: as many as the identity pool allows.")
@click.option("--load", "load", type=FiniteFloat(0), default=0.0, show_default=True, metavar="CORES",
              help="Keep this many cores busy (fractions too: 0.5) in other processes during every step.")
@click.option("--all-steps", is_flag=True, help="Run every step up to --max, also after one failed (the answer is "
              "still the largest step that passed with every smaller one).")
@click.option("--repeat", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Runs of each step; a step passes only when every run did (one run at the machine's edge "
                   "passes or fails by noise).")
@click.option("--from", "first", type=click.IntRange(1, 64), default=1, show_default=True, metavar="STEP",
              help="Start at this step (e.g. to repeat only the largest); steps not run count as not passed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (every step, every copy).")
@click.pass_context
def bench_capacity_command(ctx: click.Context, spec: Path, max_copies: int | None, load: float, all_steps: bool,
                           repeat: int, first: int, as_json: bool) -> None:
    """The most door and room cameras one processor on this machine keeps right: 1, 2, ... copies of a
    scenario at once (each its own room, cameras and people), until a copy's attendance precision drops
    below 1.0, its recall below 0.98, or its p95 capture-to-event delay reaches 1 s (door) or 2 s (room)."""
    report = bench_capacity(_config(ctx), spec_path=spec, max_copies=max_copies, load=load,
                            all_steps=all_steps, repeat=repeat, first=first, say=progress(as_json))
    if as_json:
        print_json(report)
        return
    for step in report["steps"]:
        if step["repeat"] > 1:
            click.echo(f"{step['doors']} door + {step['rooms']} room: {step['passed_runs']} of {step['repeat']} runs "
                       "passed")
        for c in step["per_copy"]:
            run = f" run {c['repeat_run']}" if "repeat_run" in c else ""
            click.echo(f"{step['doors']} door + {step['rooms']} room{run}: copy {c['copy']}: precision {c['precision']} "
                       f"recall {c['recall']} door p95 {c['door_p95_ms']} ms room p95 {c['room_p95_ms']} ms "
                       f"({'passed' if c['passed'] else 'failed: ' + '; '.join(c['failed'])})")
    click.echo(f"{report['door_streams']} door and {report['room_streams']} room cameras at once with attendance "
               f"intact on {report['cpu_cores']} cores ({report['device']}); {report['answer']}")


# --- the attendance writer ------------------------------------------------------------------------


@bench.command("writer")
@click.option("--events", type=click.IntRange(1000, 10_000_000), default=200_000, show_default=True,
              help="Presence events to write.")
@click.option("--rooms", type=click.IntRange(1, 1000), default=40, show_default=True, help="Rooms with a session each.")
@click.option("--writers", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Members of the writer's consumer group; more than 1 runs each in a process of its own "
                   "(members beyond the presence topic's partitions stay idle).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_writer(ctx, events: int, rooms: int, writers: int, as_json: bool) -> None:
    """Writer events/s from topic to committed rows vs the plain COPY ceiling of the same PostgreSQL."""
    if events < 1000 or rooms < 1:
        raise RollcallError("--events must be at least 1000 and --rooms at least 1")
    config = _config(ctx)
    endpoints = resolve(config, need=("database", "kafka"))
    result = asyncio.run(run_writer_bench(config, endpoints.database_url, endpoints.kafka_bootstrap_servers,
                                          events=events, rooms=rooms, writers=writers, say=progress(as_json)))
    print_figures(result, as_json)


# --- the dashboard's live feed --------------------------------------------------------------------


@bench.command("dashboard")
@click.option("--clients", default="200", show_default=True,
              help="Concurrent live-feed (SSE) clients; a comma list runs each in turn (e.g. 50,100,200,400).")
@click.option("--events", type=click.IntRange(10, 1_000_000), default=300, show_default=True,
              help="Events published per run.")
@click.option("--rate", type=FiniteFloat(0, 100_000, low_open=True), default=50.0, show_default=True,
              help="Events per second published.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (the last run's figures at the top).")
@click.pass_context
def bench_dashboard(ctx: click.Context, clients: str, events: int, rate: float, as_json: bool) -> None:
    """Live-feed fan-out: N SSE clients on one dashboard process, p95 delay from Kafka to each client."""
    try:
        counts = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        raise RollcallError(f"--clients {clients!r}: give a number or a comma list of numbers") from None
    if not counts or min(counts) < 1 or max(counts) > 5000:
        raise RollcallError("--clients: between 1 and 5000")
    if events < 10 or rate <= 0:
        raise RollcallError("--events at least 10 and --rate above 0")
    report = run_dashboard_bench(_config(ctx), counts, events=events, rate=rate,
                                 progress=None if as_json else (lambda line: click.echo(line, err=True)))
    if as_json:
        print_json(report)
        return
    for run in report["runs"]:
        click.echo(f"{run['clients']:>5} clients: p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, max {run['max_ms']} ms; "
                   f"{run['delivered']}/{run['expected']} deliveries, {run['connected']} connected")
    click.echo(f"serves {report['clients']} concurrent live-feed clients with p95 {report['p95_ms']} ms "
               f"(aim: {report['aim']['clients']} clients under {report['aim']['p95_ms']} ms: "
               f"{'met' if report['aim_met'] else 'not met'})")


COMMANDS = (bench,)
