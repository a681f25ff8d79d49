"""Option types of the `rollcall` commands that refuse what click's own accept: ``nan`` and ``inf`` for a
float (``click.FloatRange`` lets both through: every comparison with nan is false), ids beyond PostgreSQL's
bigint (the dates an option may name are infra.foundation.dates).
A refused value is a ``click.BadParameter``: one line through ``infra.cli.main.main``."""

from __future__ import annotations

import math

import click

BIGINT_MAX = 2**63 - 1
PORT = click.IntRange(0, 65535)
ROW_ID = click.IntRange(1, BIGINT_MAX)  # a database id (bigserial): 1 .. 2^63-1


class FiniteFloat(click.ParamType):
    """A finite float within [low, high] (``low_open``: strictly above ``low``)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number{self._bounds()}", param, ctx)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        if too_low or (self.high is not None and number > self.high):
            self.fail(f"{value!r} is out of range{self._bounds()}", param, ctx)
        return number

    def _bounds(self) -> str:
        if self.low is None and self.high is None:
            return ""
        low = "" if self.low is None else f"{'above' if self.low_open else 'at least'} {self.low:g}"
        high = "" if self.high is None else f"at most {self.high:g}"
        return f": use a number {' and '.join(p for p in (low, high) if p)}"

    def __repr__(self) -> str:
        return f"FiniteFloat({self.low}, {self.high})"

