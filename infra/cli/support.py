"""What every package's `rollcall` commands share: the loaded configuration and how figures are printed.
Imported by every infra.cli module that defines commands."""

from __future__ import annotations

import json

import click
from infra.foundation.config import load_config


def config_of(ctx: click.Context):
    """The configuration of this invocation (``--config`` on the root command), loaded once."""

    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        root.obj["config"] = load_config(root.obj.get("config_path"))
    return root.obj["config"]


def print_json(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def progress(as_json: bool):
    """Where a benchmark says what it is doing: stderr, or nowhere when stdout carries JSON."""
    return (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))


def print_figures(result: dict, as_json: bool) -> None:
    """A benchmark's figures: one JSON document, or aligned ``key  value`` lines."""
    if as_json:
        print_json(result)
        return
    width = max(map(len, result))
    for key, value in result.items():
        click.echo(f"{key:{width}}  {value}")
