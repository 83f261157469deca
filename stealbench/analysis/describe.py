"""Descriptive statistics over seeds (mean ± sample std), as the leaderboard prints them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def fmt(self, digits: int = 4, signed: bool = False) -> str:
        if not self.values:
            return "n/a"
        spec = f"{'+' if signed else ''}.{digits}f"
        mean = self.mean if abs(self.mean) >= 0.5 * 10 ** -digits else 0.0  # no "-0.0000" from rounding noise
        text = format(mean, spec)
        return text + (f" ± {self.std:.{digits}f}" if self.std is not None else "")


__all__ = ["Stat"]
