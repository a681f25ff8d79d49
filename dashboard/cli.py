"""`rollcall` commands of the dashboard package (registered by processor.cli)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this package's commands to the `rollcall` command group."""
