"""The `rollcall` command line: the root group, its commands gathered from one module per area, and the
entry point.

Every command that can fail because of its input fails with one line naming the thing and the fix
(``RollcallError``), a non-zero exit, and no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from infra.cli import bench, consumers, dashboard, processor, scenario, stack
from infra.foundation.errors import RollcallError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="ROLLCALL_CONFIG",
              help="Campus config (TOML). Default: ./rollcall.toml, else the shipped example.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Rollcall: automatic attendance from campus cameras."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


# Each area's module lists its top-level commands and groups in COMMANDS (click lists them sorted by name).
for area in (stack, processor, scenario, bench, consumers, dashboard):
    for command in area.COMMANDS:
        cli.add_command(command)


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
