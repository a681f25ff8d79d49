"""`rollcall` commands of the processor package: `run`, `enroll` and `models list|fetch|quantize`."""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
import sys
import re
from pathlib import Path

import click
from rich.console import Console

from infra.cli.support import config_of as _config
from infra.cli.support import print_json as _print_json
from infra.cli.types import PORT, FiniteFloat
from infra.foundation.endpoints import resolve
from infra.foundation.errors import RollcallError
from processor import face_precision, model_catalogue, model_fetch
from processor.enroll import RichProgress, enroll_from_dir, enroll_photos
from processor.model_packs import load_pack
from processor.service import Processor
from processor.stages.input_size import possible_sides
from processor.stages.persons import PersonDetector

# --- the processor --------------------------------------------------------------------------------

GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@click.command("run")
@click.option("--metrics-port", type=PORT, default=9108, show_default=True,
              help="Port of the Prometheus /metrics endpoint on 127.0.0.1 (0 = a free one).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Frames per inference batch at most.")
@click.option("--max-wait-ms", type=FiniteFloat(0, 60_000), default=20.0, show_default=True,
              help="How long a batch waits for more frames after its first.")
@click.option("--group", metavar="NAME",
              help="Join the processor group NAME (a Kafka consumer group; default: [group] name): run the "
                   "cameras the group gives this member, from the camera table in PostgreSQL.")
@click.option("-v", "--verbose", is_flag=True, help="Log every recognition and camera state change.")
@click.pass_context
def run_processor(ctx: click.Context, metrics_port: int, max_batch: int, max_wait_ms: float, group: str | None,
                  verbose: bool) -> None:
    """Run the processor until interrupted: on the campus's cameras as PostgreSQL holds them (followed as they
    change: `rollcall db load-config` imports the file), or as a member of a processor group on the cameras
    the group assigns it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(ctx)
    if group is not None:
        _check_group_name(group)
    endpoints = resolve(config, need=("database", "kafka"))

    async def main() -> None:
        processor = Processor(config, database_url=endpoints.database_url,
                              kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                              metrics_port=metrics_port, max_batch=max_batch, max_wait_s=max_wait_ms / 1000,
                              group=group, follow_database=True)
        await _run_until_signalled(processor)

    asyncio.run(main())


async def _run_until_signalled(processor: Processor) -> None:
    """Run ``processor`` until SIGTERM or SIGINT (SIGHUP: a note that the cameras follow PostgreSQL)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, _sighup, processor)
    runner = asyncio.create_task(processor.run_forever())
    started = asyncio.create_task(processor.started.wait())
    await asyncio.wait([runner, started], return_when=asyncio.FIRST_COMPLETED)
    if runner.done():  # failed while starting: its one-line error, not a hang
        started.cancel()
        await runner
    where = (f"as {processor.processor_id} in group {processor.group} (cameras as the group assigns them)"
             if processor.group else f"on {len(processor.door_cameras())} door and "
                                     f"{len(processor.room_cameras())} room camera(s), following PostgreSQL's camera table")
    click.echo(f"processor running {where}; metrics on http://127.0.0.1:{processor.metrics_port}/metrics", err=True)
    waiter = asyncio.create_task(stopping.wait())
    await asyncio.wait([runner, waiter], return_when=asyncio.FIRST_COMPLETED)
    if runner.done():  # stopped by itself (a stage kept failing): its one-line error, a non-zero exit
        waiter.cancel()
        await runner
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


def _check_group_name(name: str) -> None:
    if not GROUP_NAME.match(name):
        raise RollcallError(f"--group {name!r}: a group name is 1-200 letters, digits, '.', '_' or '-'")


def _sighup(processor: Processor) -> None:
    """SIGHUP once reloaded the file's cameras; they are PostgreSQL's now, followed as they change."""
    click.echo("rollcall: the processor follows the cameras in PostgreSQL (import the file with "
               "`rollcall db load-config`); SIGHUP ignored", err=True)


# --- enrolment ------------------------------------------------------------------------------------


@click.command()
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


# --- model packs ----------------------------------------------------------------------------------


@click.group()
def models() -> None:
    """Model packs: face detector, face embedder, person detector."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models_list(as_json: bool) -> None:
    """List the packs, their files, where they come from, their licences, and whether fetched."""
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
    path = model_fetch.fetch_pack(pack)
    click.echo(f"model pack {pack!r} ready in {path}")



@models.command("quantize")
@click.option("--pack", help="Model pack (default: [models] pack).")
@click.option("--rebuild", is_flag=True, help="Build and check again even if a cached variant and verdict exist.")
@click.option("--person", is_flag=True, help="The room person detector's int8 variants instead (one per input "
              "size, for 16:9 and 4:3 cameras at every side adaptive input may pick).")
@click.option("--json", "as_json", is_flag=True, help="Print the check's figures as one JSON document.")
@click.pass_context
def models_quantize(ctx: click.Context, pack: str | None, rebuild: bool, person: bool, as_json: bool) -> None:
    """Build the int8 face embedder and check it on the photo set, ahead of a start with
    `[models] face_embedder_precision = "int8"` (cached: the processor then finds both). Fails, with the
    check's reason, if the variant loses identities. With --person: the person detector's variants, ahead of
    the first start with `[models] person_precision` int8 or auto on a CPU."""
    config = _config(ctx)
    if person:
        _quantize_person(config, pack or config.models.pack, as_json)
        return
    loaded = load_pack(pack or config.models.pack)
    variant = face_precision.checked_int8(loaded, config.thresholds, rebuild=rebuild)
    if as_json:
        _print_json({"accepted": variant.verdict.accepted, "reason": variant.verdict.reason, "cached": variant.cached,
                     "figures": variant.verdict.figures})
    if variant.model is None:
        raise RollcallError(variant.verdict.reason)
    if not as_json:
        click.echo(f"{variant.verdict.reason} ({'cached' if variant.cached else 'built and checked now'})")


# the frame shapes (height, width) whose person-detector inputs are built ahead: every 16:9 camera (720p, 1080p,
# 4K) and every 4:3 one gets the same inputs as these; another aspect's are built on its first frames
AHEAD_FRAME_SHAPES = ((720, 1280), (480, 640))


def _quantize_person(config, pack: str, as_json: bool) -> None:
    tracking = config.tracking
    detector = PersonDetector(pack, max_side=tracking.person_input_px, precision="int8")
    sides = (possible_sides(tracking.person_input_px, tracking.person_input_min_px) if tracking.adaptive_input
             else [tracking.person_input_px])
    sizes = sorted({size for shape in AHEAD_FRAME_SHAPES for size in detector.input_sizes(shape, sides)},
                   reverse=True)
    done = detector.prebuild_int8(sizes)
    built = [f"{w}x{h}" for (h, w), new in done if new]
    if as_json:
        _print_json({"sizes": [f"{w}x{h}" for (h, w), _ in done], "built": built})
        return
    click.echo(f"person detector int8: {len(done)} input sizes ready ({len(built)} built now, "
               f"{len(done) - len(built)} cached)")


COMMANDS = (run_processor, enroll, models)
