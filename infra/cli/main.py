"""The `rollcall` command line: the root group, its commands gathered from one module per area, and the
entry point.

Every command that can fail because of its input fails with one line naming the thing and the fix
(``RollcallError``), a non-zero exit, and no traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from infra.foundation.errors import RollcallError

# Which area module (infra/cli/<area>.py) holds each top-level command or group. The root loads only the
# module of the command being run: importing every area costs every command ~1.9 s of CPU (the processor,
# the renderer, the dashboard, scipy), against ~0.5 s for `rollcall status`. click's documented pattern
# for this ("lazily loading subcommands"); tests/test_cli_commands.py checks the table against each
# area's COMMANDS, so a command cannot be added without it.
AREAS = {
    "up": "stack", "down": "stack", "status": "stack", "stack": "stack", "db": "stack", "config": "stack",
    "run": "processor", "enroll": "processor", "models": "processor",
    "scenario": "scenario", "bench": "bench",
    "attendance": "consumers", "privacy": "consumers", "person": "consumers", "reports": "consumers",
    "dashboard": "dashboard", "user": "dashboard", "demo": "dashboard",
}


def area_commands(area: str) -> dict[str, click.Command]:
    """The top-level commands of ``infra/cli/<area>.py`` (its COMMANDS), by name."""
    module = importlib.import_module(f"infra.cli.{area}")
    return {command.name: command for command in module.COMMANDS}


class AreaGroup(click.Group):
    """The root group: lists every command from AREAS, imports an area's module when one of its
    commands is asked for (help text included)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(AREAS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        area = AREAS.get(name)
        return area_commands(area).get(name) if area else None


@click.group(cls=AreaGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="ROLLCALL_CONFIG",
              help="Campus config (TOML). Default: ./rollcall.toml, else the shipped example.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Rollcall: automatic attendance from campus cameras."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


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
