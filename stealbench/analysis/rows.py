"""Leaderboard rows: runs grouped by (data, attack, label mode, other settings, budget, defense), seeds
aggregated, and compared with the undefended (`none`) runs of the same group: accuracy drop paired by seed, query
multiplier (stealbench.analysis.curves)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .curves import Multiplier, query_multiplier
from .describe import Stat
from .labels import assign_labels
from .runs import BASELINE, Run

@dataclass
class Row:
    data: str
    attack: str
    label_mode: str
    setting: str
    budget: int
    defense: str
    runs: list[Run]
    rank: int = 0
    acc_drop: Stat = field(default_factory=lambda: Stat([]))
    multiplier: Multiplier = field(default_factory=lambda: Multiplier([]))
    baseline: bool = False
    note: str = ""
    #: the best response of this row's cell over every attacker variant (stealbench.analysis.best_response)
    best: Any = None

    @property
    def attack_family(self) -> str:
        """The attack's registry key: its variants (parameters, label modes) are one attacker's choices."""
        return self.runs[0].identity["attack"]

    @property
    def defense_key(self) -> str:
        return self.runs[0].identity["defense"]

    def metric(self, key: str) -> Stat:
        return Stat([r.metrics[key] for r in self.runs])

    @property
    def utility_change(self) -> Stat:
        return Stat([r.metrics["victim/acc_defended"] - r.metrics["victim/acc"] for r in self.runs])

    def price(self, key: str) -> Stat:
        """A `price` figure (e.g. `defense/cost_ratio`) over the runs that recorded it."""
        return Stat([r.price[key] for r in self.runs if key in r.price])

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


def group_key(run: Run) -> tuple:
    return (run.identity["data"], run.attack_label, run.label_mode_label, run.setting)


def largest_budget_runs(rows: list[Row]) -> dict[tuple, dict[int, Run]]:
    """The seed's most complete curve per (data, attack, label mode, setting, defense): its largest-budget run."""
    longest: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for row in rows:
        for run in row.runs:
            slot = longest[(*group_key(run), row.defense)]
            if run.seed not in slot or run.budget > slot[run.seed].budget:
                slot[run.seed] = run
    return longest


def build_rows(runs: list[Run]) -> tuple[list[Row], list[tuple[str, str]]]:
    """Aggregate runs into rows (seeds merged) and derive the comparisons. Returns (rows, duplicate problems)."""
    assign_labels(runs)
    problems: list[tuple[str, str]] = []
    cells: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.source):
        key = (*group_key(run), run.budget, run.defense_label)
        if run.seed in cells[key]:
            problems.append((run.source, f"duplicate of {cells[key][run.seed].source} (same settings and seed "
                                         f"{run.seed}); skipped"))
            continue
        cells[key][run.seed] = run
    rows = [Row(k[0], k[1], k[2], k[3], k[4], k[5], sorted(v.values(), key=lambda r: r.seed))
            for k, v in cells.items()]

    longest = largest_budget_runs(rows)
    baselines = {(r.data, r.attack, r.label_mode, r.setting, r.budget): r for r in rows
                 if r.runs[0].identity["defense"] == BASELINE and r.defense == BASELINE}
    for row in rows:
        group = (row.data, row.attack, row.label_mode, row.setting)
        base = baselines.get((*group, row.budget))
        if row.defense == BASELINE:
            row.baseline = True
            continue
        if base is None:
            row.note = "no undefended run at this budget"
            continue
        base_by_seed = {r.seed: r for r in base.runs}
        drops, mults = [], []
        curves = longest[(*group, row.defense)]
        for run in row.runs:
            ref = base_by_seed.get(run.seed)
            if ref is None:
                continue
            drops.append(ref.metrics["surrogate/acc"] - run.metrics["surrogate/acc"])
        base_curves = longest[(*group, BASELINE)]
        for seed, ref in sorted(base_by_seed.items()):
            defended = curves.get(seed)
            if defended is None:
                continue
            mults.append((seed, *query_multiplier(base_curves.get(seed, ref).curve, defended.curve, row.budget,
                                                  ref.metrics["surrogate/acc"])))
        row.acc_drop = Stat(drops)
        row.multiplier = Multiplier(mults)
        if not drops:
            row.note = "no undefended run with a matching seed"
    # rank within (group, budget): lower attacker accuracy first (the defense leaves the attacker less)
    by_cell: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        by_cell[(row.data, row.attack, row.label_mode, row.setting, row.budget)].append(row)
    for cell in by_cell.values():
        cell.sort(key=lambda r: (r.metric("surrogate/acc").mean, r.defense))
        for i, row in enumerate(cell, start=1):
            row.rank = i
    rows.sort(key=lambda r: (r.data, r.attack, r.label_mode, r.setting, r.budget, r.rank))
    return rows, problems


__all__ = ["Row", "build_rows", "group_key", "largest_budget_runs"]
