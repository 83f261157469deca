"""Reading accuracy-vs-queries curves: the value at a budget, the queries to reach an accuracy, query multipliers.

Query multiplier: A = the accuracy the undefended attack reached with B queries (its curve at B, from the seed's
largest-budget undefended run). Queries needed to reach A are read off each curve the same way, the first checkpoint
crossing of A, interpolated linearly in log(queries); multiplier = queries needed against the defense / queries
needed without it (= B when the undefended curve rises monotonically; reading both curves alike makes a defense that
changes nothing score exactly 1x on noisy curves). When the defended curve never reaches A the needed queries exceed
its last checkpoint Q: reported as "> Q/B" (a lower bound); when its first checkpoint q0 already reaches A, as
"<= q0/B".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .describe import Stat

def distinct_query_points(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve sorted by queries with one point per query count: the last checkpoint recorded at that count.

    A surrogate can be evaluated more than once at the same query count (trained further without new queries);
    the attacker's model at q queries is then the last one. Never the best one: that would select on the test set.
    One point per count also keeps the log-space interpolation free of zero-width segments (log(q/q) = 0).
    """
    by_queries: dict[float, dict[str, Any]] = {}
    for p in curve:  # in recorded order, so a later checkpoint replaces an earlier one at the same count
        by_queries[p["queries"]] = p
    return [by_queries[q] for q in sorted(by_queries)]


def queries_to_reach(curve: list[dict[str, Any]], target: float) -> tuple[float, str]:
    """(queries, bound) to reach `target` surrogate accuracy on a curve: bound '=' (interpolated crossing),
    '>' (never reached: queries is the last checkpoint) or '<=' (the first checkpoint already reaches it)."""
    points = distinct_query_points(curve)
    prev = None
    for p in points:
        if p["surrogate/acc"] >= target:
            if prev is None:
                return float(p["queries"]), "<="
            q0, a0, q1, a1 = prev["queries"], prev["surrogate/acc"], p["queries"], p["surrogate/acc"]
            t = (target - a0) / (a1 - a0) if a1 != a0 else 1.0
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0))), "="
        prev = p
    return float(points[-1]["queries"]), ">"


def value_at(curve: list[dict[str, Any]], queries: float) -> float | None:
    """Surrogate accuracy on a curve at `queries`, interpolated in log(queries); None outside the curve."""
    points = distinct_query_points(curve)
    for a, b in zip(points, points[1:]):
        if a["queries"] <= queries <= b["queries"]:
            t = math.log(queries / a["queries"]) / math.log(b["queries"] / a["queries"])
            return a["surrogate/acc"] + t * (b["surrogate/acc"] - a["surrogate/acc"])
    if points and points[0]["queries"] == queries:
        return points[0]["surrogate/acc"]
    return None


def query_multiplier(undefended: list[dict[str, Any]], defended: list[dict[str, Any]], budget: int,
                     fallback_target: float) -> tuple[float, str]:
    """(multiplier, bound). Target A: the undefended curve's accuracy at `budget` (else `fallback_target`, the
    budget run's final accuracy). Both curves are read the same way, first crossing of A in log(queries), so that a
    defense identical to no defense scores exactly 1x even when the curves are not monotone."""
    target = value_at(undefended, budget)
    target = fallback_target if target is None else target
    q_def, b_def = queries_to_reach(defended, target)
    q_und, b_und = queries_to_reach(undefended, target - 1e-12)
    if b_und == ">":  # cannot happen when the target comes from this curve; be safe
        q_und, b_und = float(budget), "="
    if b_und == "<=" and q_und >= budget:  # the budget is the first checkpoint: exact
        b_und = "="
    if b_def == ">":
        bound = ">"
    elif b_und == "=":
        bound = b_def
    elif b_def == "=":
        bound = ">="
    else:
        bound = "mixed"
    return q_def / q_und, bound


@dataclass
class Multiplier:
    per_seed: list[tuple[int, float, str]]  # (seed, multiplier, bound)

    def summary(self) -> tuple[float | None, float | None, str]:
        """(mean, std, bound) with bound '=', '>=', '>', '<=' or 'mixed'."""
        if not self.per_seed:
            return None, None, ""
        values = [m for _, m, _ in self.per_seed]
        bounds = {b for _, _, b in self.per_seed}
        stat = Stat(values)
        if bounds == {"="}:
            return stat.mean, stat.std, "="
        if bounds <= {"=", ">", ">="}:
            return stat.mean, None, ">" if bounds == {">"} else ">="
        if bounds <= {"=", "<="}:
            return stat.mean, None, "<="
        return stat.mean, None, "mixed"

    def fmt(self) -> str:
        mean, std, bound = self.summary()
        if mean is None:
            return "n/a"
        reached = sum(1 for _, _, b in self.per_seed if b != ">")
        n = len(self.per_seed)
        if bound == "=":
            return f"{mean:.2f}×" + (f" ± {std:.2f}" if std is not None else "")
        if bound == ">":
            return f"> {mean:.2f}× (not reached)"
        if bound == ">=":
            return f"≥ {mean:.2f}× ({reached}/{n} reached)"
        if bound == "<=":
            return f"≤ {mean:.2f}×"
        return "mixed bounds (see CSV)"


__all__ = ["Multiplier", "distinct_query_points", "queries_to_reach", "query_multiplier", "value_at"]
