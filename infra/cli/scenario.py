"""`rollcall scenario render|run`: rendered test scenarios with ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from infra.cli.support import config_of as _config
from infra.cli.support import print_json as _print_json
from infra.cli.types import FiniteFloat
from infra.scenario import default_out_dir, render
from infra.scenario.runner import run_scenario


@click.group()
def scenario() -> None:
    """Rendered test scenarios with ground truth."""


@scenario.command("render")
@click.argument("spec", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for door.ts, room.ts and ground_truth.json (default: var/scenarios/<name>).")
def scenario_render(spec: Path, out_dir: Path | None) -> None:
    """Render a scenario spec (TOML) to door/room camera videos and ground truth. Cached."""
    out_dir = out_dir or default_out_dir(spec)
    result = render(spec, out_dir)
    click.echo(f"{'cached' if result.cached else f'rendered in {result.seconds:.1f} s'}: "
               f"{result.door_video}, {result.room_video}, {result.ground_truth_path}")


@scenario.command("run")
@click.argument("spec", type=click.Path(dir_okay=False, readable=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the results.")
@click.option("--load", "load", type=FiniteFloat(0), default=0.0, show_default=True, metavar="CORES",
              help="Keep this many cores busy (fractions too: 0.5) in other processes for the whole run.")
@click.option("--processors", type=click.IntRange(1, 16), default=1, show_default=True, metavar="N",
              help="Run the processor as N processes in one processor group (`rollcall run --group`).")
@click.option("--kill-one-at", "kill_at", type=FiniteFloat(0), default=None, metavar="SECONDS",
              help="SIGKILL the group member running the room camera this far into the video; the report's "
                   "failover section says how long any camera went unanalysed.")
@click.option("--kill-role", type=click.Choice(["room", "door"]), default="room", show_default=True,
              help="Whose member --kill-one-at kills: the room camera's (its live tracks move) or the door camera's.")
@click.pass_context
def scenario_run(ctx: click.Context, spec: Path, as_json: bool, load: float, processors: int,
                 kill_at: float | None, kill_role: str) -> None:
    """Render (cached), bring up the stack, serve the videos over RTSP, run the system, score it.

    The run has its own database and topics, removed at the end."""
    result = run_scenario(spec, config=_config(ctx), progress=None if as_json else click.echo, load=load,
                          processors=processors, kill_at=kill_at, kill_role=kill_role)
    if as_json:
        _print_json(result)
    else:
        flat = _flatten(result)
        width = max(map(len, flat), default=0)
        for key, value in sorted(flat.items()):
            click.echo(f"{key:{width}}  {value}")


def _flatten(document, prefix: str = "") -> dict:
    """A nested result as ``outer.inner: value`` pairs, one per leaf."""
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


COMMANDS = (scenario,)
