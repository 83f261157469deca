"""Reading accuracy-vs-queries curves: the value at a budget, the queries to reach an accuracy, query multipliers.

Query multiplier at budget B: A = the accuracy the undefended attack reached with B queries (its curve at B, from
the seed's largest-budget undefended run). The undefended reference is the first checkpoint of its curve reaching A
(B when the curve rises monotonically; earlier on a curve that dips, so that a defense that changes nothing is at
most 1×). The defended curve first reaches A at a checkpoint q1 after one q0 that did not: the queries it needs lie
in (q0, q1], and the multiplier is reported as that bracket [q0/ref, q1/ref], never interpolated in between
(checkpoints 2× to 5× apart would give a precision the runs do not have). Never reached within its last checkpoint
Q: "> Q/ref" (a lower bound: Q/ref is the design's ceiling at this budget); reached at its first checkpoint q1:
"≤ q1/ref". Over seeds: the geometric mean of each end (stealbench.analysis.stats); a mix of lower and upper bounds
gives no bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import stats

def distinct_query_points(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve sorted by queries with one point per query count: the last checkpoint recorded at that count.

    A surrogate can be evaluated more than once at the same query count (trained further without new queries);
    the attacker's model at q queries is then the last one. Never the best one: that would select on the test set.
    """
    by_queries: dict[float, dict[str, Any]] = {}
    for p in curve:  # in recorded order, so a later checkpoint replaces an earlier one at the same count
        by_queries[p["queries"]] = p
    return [by_queries[q] for q in sorted(by_queries)]


def queries_to_reach(curve: list[dict[str, Any]], target: float) -> tuple[float, float]:
    """(low, high): the queries needed to reach `target` surrogate accuracy lie in (low, high] on this curve's
    checkpoints. (0, q1] when the first checkpoint q1 already reaches it, (Q, ∞) when the last one Q does not."""
    previous = 0.0
    for p in distinct_query_points(curve):
        if p["surrogate/acc"] >= target:
            return previous, float(p["queries"])
        previous = float(p["queries"])
    return previous, math.inf


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
                     fallback_target: float) -> tuple[float, float]:
    """(low, high) bracket of the multiplier at `budget` (module docstring). Target A: the undefended curve's
    accuracy at `budget` (else `fallback_target`, the budget run's final accuracy)."""
    target = value_at(undefended, budget)
    target = fallback_target if target is None else target
    low, high = queries_to_reach(defended, target)
    reference = queries_to_reach(undefended, target - 1e-12)[1]
    reference = float(budget) if math.isinf(reference) else reference  # cannot happen: A comes from this curve
    return low / reference, high / reference


@dataclass
class Multiplier:
    per_seed: list[tuple[int, float, float]]  # (seed, low, high): the seed's multiplier lies in [low, high]

    def summary(self) -> tuple[float | None, float | None, str]:
        """(low, high, bound): geometric means over seeds of each end; bound '=' (exact), '[]' (bracketed), '>'
        (only lower bounds), '>=' (exact or lower bounds), '<=' (upper bounds) or 'none' (lower and upper mixed).
        An open end is None."""
        if not self.per_seed:
            return None, None, ""
        lows, highs = [lo for _, lo, _ in self.per_seed], [hi for _, _, hi in self.per_seed]
        low = stats.geometric_mean(lows) if all(v > 0 for v in lows) else None
        high = stats.geometric_mean(highs) if all(math.isfinite(v) for v in highs) else None
        if low is not None and high is not None:
            return low, high, "=" if lows == highs else "[]"
        if low is not None:
            return low, None, ">" if all(math.isinf(v) for v in highs) else ">="
        return None, high, "<=" if high is not None else "none"

    def fmt(self) -> str:
        low, high, bound = self.summary()
        reached = sum(1 for _, _, hi in self.per_seed if math.isfinite(hi))
        n = len(self.per_seed)
        if bound == "":
            return "n/a"
        if bound == "=":
            return f"{low:.2f}×"
        if bound == "[]":
            return f"[{low:.2f}, {high:.2f}]×"
        if bound == ">":
            return f"> {low:.2f}× (not reached)"
        if bound == ">=":
            return f"≥ {low:.2f}× ({reached}/{n} reached)"
        if bound == "<=":
            return f"≤ {high:.2f}×"
        return "no bound (seeds mix lower and upper bounds)"


__all__ = ["Multiplier", "distinct_query_points", "queries_to_reach", "query_multiplier", "value_at"]
