"""Inference over seeds for verdicts: Student t intervals, one-sided t tests, Holm's step-down adjustment, TOST.

Every figure a verdict rests on is one value per seed (a paired difference where the claim compares two arms), so
the seeds are the sample: n seeds give n − 1 degrees of freedom. Intervals are two-sided at LEVEL (95%) and the
one-sided tests run at ALPHA = (1 − LEVEL) / 2, so "the test rejects" and "the 95% interval lies beyond the
value" are the same statement. Multipliers are ratios: their interval is the t interval of log values, exponentiated
(around the geometric mean).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as _st

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2  # each one-sided test; two of them make the 95% interval
METHOD = "Student t over seeds (scipy.stats.t), 95% two-sided; one-sided tests at α = 0.025"


@dataclass(frozen=True)
class Interval:
    lo: float  # may be -inf
    hi: float  # may be +inf

    def fmt(self, digits: int = 3, unit: str = "") -> str:
        def one(x: float) -> str:
            return "−∞" if x == -math.inf else "∞" if x == math.inf else f"{x:.{digits}f}{unit}"
        return f"[{one(self.lo)}, {one(self.hi)}]"


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def t_interval(values: list[float], level: float = LEVEL) -> Interval:
    """Two-sided t interval of the mean; unbounded with one seed (no spread to judge), a point with zero spread."""
    n = len(values)
    if n < 2:
        return Interval(-math.inf, math.inf)
    m, s = mean(values), sd(values)
    half = _st.t.ppf(0.5 + level / 2, n - 1) * s / math.sqrt(n)
    return Interval(m - half, m + half)


def p_greater(values: list[float], value: float) -> float:
    """One-sided p of H0: mean ≤ value (small: the mean is above `value`)."""
    n = len(values)
    if n < 2:
        return 1.0
    m, s = mean(values), sd(values)
    if s == 0:
        return 0.0 if m > value else 1.0
    return float(_st.t.sf((m - value) / (s / math.sqrt(n)), n - 1))


def p_less(values: list[float], value: float) -> float:
    """One-sided p of H0: mean ≥ value (small: the mean is below `value`)."""
    return p_greater([-v for v in values], -value)


def tost_p(values: list[float], center: float, margin: float) -> float:
    """Two one-sided tests of H0: |mean − center| ≥ margin; p is the larger of the two (small: equivalent)."""
    return max(p_greater(values, center - margin), p_less(values, center + margin))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def geometric_mean(values: list[float]) -> float:
    return math.exp(mean([math.log(v) for v in values]))


def log_t_interval(lows: list[float], highs: list[float], level: float = LEVEL) -> Interval:
    """Interval of a geometric mean over seeds whose values are known only to lie in [low, high] per seed (a
    crossing between checkpoints): the lower t limit of the log lows and the upper t limit of the log highs. A
    low of 0 (only an upper bound) leaves the interval open below, a high of ∞ (only a lower bound) open above."""
    lo = 0.0 if any(v <= 0 for v in lows) else math.exp(t_interval([math.log(v) for v in lows], level).lo)
    hi = math.inf if any(math.isinf(v) for v in highs) else math.exp(
        t_interval([math.log(v) for v in highs], level).hi)
    return Interval(lo, hi)


__all__ = ["ALPHA", "Interval", "LEVEL", "METHOD", "geometric_mean", "holm", "log_t_interval", "mean", "p_greater",
           "p_less", "sd", "t_interval", "tost_p"]
