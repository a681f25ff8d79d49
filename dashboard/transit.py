"""A door's transit window suggested from what the cameras saw: the seconds from a door recognition to
the room camera's track entry, over confident single arrivals only, where nobody else was recognised at
the door and exactly one track entered the room within ``horizon_s`` around it (two people close together
would pair wrongly). The window covers the middle 90 % of those transits with a margin on each side.

The pairing does not use the handoff the processor made: a window that is too narrow today would
otherwise only ever confirm itself."""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass

MIN_ARRIVALS = 5
HORIZON_S = 60.0
QUIET_BEFORE_S = 10.0  # no track entry this long before the recognition (someone ahead would pair instead)
MARGIN_BELOW_S = 0.5
MARGIN_ABOVE_S = 1.0


@dataclass(frozen=True)
class Suggestion:
    arrivals: int
    min_s: float | None = None
    max_s: float | None = None
    median_s: float | None = None
    reason: str = ""


def _count(times: list[float], low: float, high: float) -> int:
    return bisect.bisect_right(times, high) - bisect.bisect_left(times, low)


def single_arrival_transits(recognitions: list[float], entries: list[float],
                            horizon_s: float = HORIZON_S) -> list[float]:
    """Transit seconds of the recognitions (sorted times) alone at the door within ``horizon_s`` either side,
    followed by exactly one entry (sorted times) within ``horizon_s``, and none in the ``QUIET_BEFORE_S`` before."""
    transits = []
    for t in recognitions:
        if _count(recognitions, t - horizon_s, t + horizon_s) != 1:
            continue
        if _count(entries, t - QUIET_BEFORE_S, t) - _count(entries, t, t) or _count(entries, t, t + horizon_s) != 1:
            continue
        transits.append(entries[bisect.bisect_left(entries, t)] - t)
    return transits


def suggest(transits: list[float]) -> Suggestion:
    """The window from the middle 90 % of ``transits`` with margins, or why there is none."""
    if len(transits) < MIN_ARRIVALS:
        return Suggestion(len(transits), reason=f"{len(transits)} confident single arrival(s) seen: at least "
                                                f"{MIN_ARRIVALS} are needed for a suggestion")
    cuts = statistics.quantiles(transits, n=20, method="inclusive")
    low, high = max(0.0, cuts[0] - MARGIN_BELOW_S), cuts[-1] + MARGIN_ABOVE_S
    return Suggestion(len(transits), round(low, 1), round(max(high, low + 0.5), 1),
                      round(statistics.median(transits), 1))
