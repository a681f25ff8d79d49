"""The handoff's arithmetic: one group of recognitions and entries, its pairing costs, the best pairing
and the margins of the pairings that would change identities (the rule is in :mod:`processor.handoff`)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment


class Group:
    """One group's costs: pair costs (None: not a candidate pair), unmatched costs, the order term;
    the best pairing, and the margins of the exchanges that would change identities."""

    def __init__(self, recs: list[_Recognition], ents: list[_Entry], order_weight: float, pair_cost,
                 unmatched_cost):
        self.n, self.m = len(recs), len(ents)
        self.pair = np.full((self.n, self.m), np.inf)
        for i, r in enumerate(recs):
            for j, e in enumerate(ents):
                cost = pair_cost(r, e)
                if cost is not None:
                    self.pair[i, j] = cost
        self.unmatched_r = np.array([unmatched_cost(r.door) for r in recs])
        self.unmatched_e = np.array([unmatched_cost(e.door) for e in ents])
        self.r_time = np.array([r.time for r in recs])
        self.e_time = np.array([e.time for e in ents])
        self.order_weight = order_weight

    def total(self, match: dict[int, int]) -> float:
        js = np.fromiter(match.keys(), int, len(match))
        is_ = np.fromiter(match.values(), int, len(match))
        cost = float(self.pair[is_, js].sum())
        cost += float(self.unmatched_r.sum() - self.unmatched_r[is_].sum())
        cost += float(self.unmatched_e.sum() - self.unmatched_e[js].sum())
        if len(js) > 1 and self.order_weight:
            de = self.e_time[js][:, None] - self.e_time[js][None, :]
            dr = self.r_time[is_][:, None] - self.r_time[is_][None, :]
            crossed = de * dr < 0
            cost += self.order_weight * float(np.minimum(np.abs(de), np.abs(dr))[crossed].sum()) / 2
        return cost

    def exchanges(self, match: dict[int, int]):
        """(changed entries, new pairing) one exchange away: two entries swap their recognitions (one may
        have none), or an entry takes a recognition nobody has."""
        for j1, j2 in itertools.combinations(range(self.m), 2):
            i1, i2 = match.get(j1), match.get(j2)
            if i1 is None and i2 is None:
                continue
            if (i2 is not None and not np.isfinite(self.pair[i2, j1])) or \
                    (i1 is not None and not np.isfinite(self.pair[i1, j2])):
                continue
            new = {j: i for j, i in match.items() if j not in (j1, j2)}
            if i2 is not None:
                new[j1] = i2
            if i1 is not None:
                new[j2] = i1
            yield ((j1, i1, i2), (j2, i2, i1)), new
        unmatched = set(range(self.n)) - set(match.values())
        for j in range(self.m):
            for k in unmatched:
                if np.isfinite(self.pair[k, j]):
                    yield ((j, match.get(j), k),), {**match, j: k}

    def _hungarian(self, pair: np.ndarray, unmatched_e: np.ndarray) -> dict[int, int]:
        n, m = self.n, self.m
        cost = np.full((n + m, m + n), 1e9)
        cost[:n, :m] = np.where(np.isfinite(pair), pair, 1e9)
        cost[n:, m:] = 0.0
        cost[np.arange(n), m + np.arange(n)] = self.unmatched_r
        cost[n + np.arange(m), np.arange(m)] = unmatched_e
        rows, cols = linear_sum_assignment(cost)
        return {int(j): int(i) for i, j in zip(rows, cols) if i < n and j < m and np.isfinite(pair[i, j])}

    def best(self) -> dict[int, int]:
        """The Hungarian assignment of the pair costs, improved by exchanges while the total falls."""
        match = self._hungarian(self.pair, self.unmatched_e)
        current = self.total(match)
        for _ in range(10 * (self.n + self.m)):  # each step lowers the total; bounded all the same
            better = min(((self.total(new), new) for _, new in self.exchanges(match)),
                         key=lambda tn: tn[0], default=None)
            if better is None or better[0] >= current - 1e-9:
                break
            current, match = better
        return match

    def alternatives(self, match: dict[int, int]):
        """For each entry, the best pairing (by the pair costs) in which it does not keep what it has: its
        recognition, or having none. Catches what no single exchange reaches: a whole stream shifted by
        one (each entry taking the next recognition, one of them left over)."""
        for j in range(self.m):
            pair, unmatched_e = self.pair, self.unmatched_e
            if j in match:
                pair = pair.copy()
                pair[match[j], j] = np.inf
            else:
                unmatched_e = unmatched_e.copy()
                unmatched_e[j] = 1e9
            alternative = self._hungarian(pair, unmatched_e)
            if alternative.get(j) != match.get(j):
                yield alternative

    def identity_margins(self, match: dict[int, int], identity) -> dict[int, float]:
        """Entry -> the smallest total increase of a pairing that would change its identity: one exchange
        away, or the best pairing without what the entry (or another) has (:meth:`alternatives`)."""
        base = self.total(match)
        margins: dict[int, float] = {}
        candidates = [new for _, new in self.exchanges(match)] + list(self.alternatives(match))
        for new in candidates:
            touched = [j for j in range(self.m) if identity(match.get(j)) != identity(new.get(j))]
            if not touched:
                continue
            margin = self.total(new) - base
            for j in touched:
                margins[j] = min(margins.get(j, np.inf), margin)
        return margins



def candidate_groups(recs: list[_Recognition], ents: list[_Entry], pair_ok) -> list[tuple[list, list]]:
    """Connected components of the candidate pairs (lone recognitions and entries are groups too)."""
    parent = list(range(len(recs) + len(ents)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, r in enumerate(recs):
        for j, e in enumerate(ents):
            if pair_ok(r, e):
                parent[find(i)] = find(len(recs) + j)
    groups: dict[int, tuple[list, list]] = {}
    for i, r in enumerate(recs):
        groups.setdefault(find(i), ([], []))[0].append(r)
    for j, e in enumerate(ents):
        groups.setdefault(find(len(recs) + j), ([], []))[1].append(e)
    return list(groups.values())
