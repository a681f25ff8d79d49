"""`rollcall` commands of the consumers package (registered by processor.cli)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this package's commands to the `rollcall` command group."""
