"""Security against cost: each defense setting's attacker (its best response) against what the defense costs.

A point is one defense setting in one (data, attack family, setting, budget) cell: the best response's accuracy
and fidelity (stealbench.analysis.best_response) against two costs to the defender, from the defended victim on
the benign evaluation set (the same for every attacker variant of a seed; averaged over seeds):

- `benign_acc_drop`: `victim/acc` − `victim/acc_defended` (accuracy the defense takes from benign users);
- `tv`: total variation between clean and released probabilities, `defense/l1` / 2.

A knob is a defense parameter (results.json's `config.defense.init_args`, any key: β/γ, ε, k, decimals, ...) that
takes more than one value among a defense's runs of a cell; nothing here names defenses or parameters.

Equal cost, as the MAD and GRAD² papers compare defenses: at each cost level, each defense's best setting among
those whose cost is at most the level (the lowest best-response accuracy; ties: the cheaper setting). Chosen over
interpolating each defense's frontier because a cap only picks settings that were run and can be deployed: an
interpolated point is a defense nobody measured, and frontiers need not be monotone in the knob (a larger γ can
cost less). A defense run at one setting takes part with that setting. The choice uses the measured attacker
accuracy, as a defender tuning the knob would; the attacker it is measured against is still the best response.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..errors import StealbenchError
from .best_response import BestResponse
from .labels import flatten_config, fmt_param
from .runs import BASELINE, Run

#: cost name -> (what it is, per-run value)
COSTS: dict[str, tuple[str, Any]] = {
    "benign_acc_drop": ("benign accuracy drop (victim/acc − victim/acc_defended)",
                        lambda run: run.metrics["victim/acc"] - run.metrics["victim/acc_defended"]),
    "tv": ("total variation of released probabilities (defense/l1 / 2)", lambda run: run.metrics["defense/l1"] / 2),
}
DEFAULT_LEVELS = {"benign_acc_drop": (0.0, 0.01, 0.02, 0.05, 0.1), "tv": (0.1, 0.25, 0.5, 0.75, 1.0)}
#: costs within this of a level count as within it (float noise of metrics written with 6+ digits)
_TOLERANCE = 1e-9


class TradeoffError(StealbenchError):
    """Runs that cannot make a security-against-cost comparison (no knob swept, too few runs)."""


@dataclass
class Point:
    best: BestResponse
    defense_key: str
    params: dict[str, Any]
    costs: dict[str, float]

    @property
    def cell(self) -> tuple:
        return (self.best.data, self.best.attack, self.best.setting, self.best.budget)

    def knob_text(self, knobs: list[str]) -> str:
        return ", ".join(f"{k}={fmt_param(self.params.get(k))}" for k in knobs) or self.best.defense


def _per_seed_cost(best: BestResponse, value: Any) -> float:
    """Mean over seeds of a defended-victim metric (one value per seed: every variant of a seed shares it)."""
    by_seed: dict[int, Run] = {}
    for row in best.variants:
        for run in row.runs:
            by_seed.setdefault(run.seed, run)
    return statistics.fmean(value(run) for run in by_seed.values())


def points_of(bests: list[BestResponse]) -> list[Point]:
    points = []
    for best in bests:
        run = best.winner.runs[0]
        section = run.config.get("defense")
        args = section.get("init_args") if isinstance(section, dict) else None
        params = flatten_config(args) if isinstance(args, dict) and args else {}
        points.append(Point(best, best.winner.defense_key, params,
                            {name: _per_seed_cost(best, value) for name, (_, value) in COSTS.items()}))
    return points


def knobs_of(points: list[Point]) -> dict[tuple, list[str]]:
    """(cell..., defense key) -> the parameters that take more than one value there (its swept knobs)."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        if p.defense_key != BASELINE:
            groups[(*p.cell, p.defense_key)].append(p)
    return {key: sorted({k for p in group for k in p.params
                         if len({fmt_param(q.params.get(k)) for q in group}) > 1})
            for key, group in groups.items()}


def check_swept(points: list[Point], n_runs: int, sources: list[str]) -> dict[tuple, list[str]]:
    """The knobs, or a TradeoffError saying why there is no trade-off to draw and how to get one."""
    where = ", ".join(sources)
    if n_runs < 2:
        raise TradeoffError(f"only {n_runs} complete run in {where}: a security-against-cost trade-off needs a "
                            "defense run at 2 or more settings of its knob (e.g. deceptive at two gamma values), "
                            "plus undefended runs as the reference")
    knobs = knobs_of(points)
    if not any(knobs.values()):
        ran = sorted({p.best.defense for p in points if p.defense_key != BASELINE})
        raise TradeoffError(f"no defense knob is swept in {where}: each defense ran at one setting "
                            f"({', '.join(ran) or 'only undefended runs'}); run one at 2 or more settings, e.g. a "
                            "grid with `defenses: [none, {name: deceptive, gamma: 0.1}, {name: deceptive, gamma: "
                            "0.5}]`")
    return knobs


@dataclass
class EqualCost:
    cell: tuple  # (data, attack, setting, budget)
    cost: str
    level: float
    defense_key: str
    chosen: Point | None
    within: int  # settings of this defense with cost <= level
    settings: int  # settings of this defense run in the cell
    reference: BestResponse | None  # the undefended best response of the cell
    rank: int = 0


def equal_cost(points: list[Point], levels: dict[str, tuple[float, ...]]) -> list[EqualCost]:
    """Per cell, cost measure and level: each defense's best setting within the level, ranked (lower attacker
    accuracy first; a defense with no setting within the level last)."""
    by_cell: dict[tuple, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    references: dict[tuple, BestResponse] = {}
    for p in points:
        if p.defense_key == BASELINE and p.best.baseline:
            references[p.cell] = p.best
        else:
            by_cell[p.cell][p.defense_key].append(p)
    out: list[EqualCost] = []
    for cell, defenses in sorted(by_cell.items()):
        for cost, cost_levels in levels.items():
            for level in cost_levels:
                group = []
                for key, options in sorted(defenses.items()):
                    within = [p for p in options if p.costs[cost] <= level + _TOLERANCE]
                    chosen = min(within, key=lambda p: (p.best.acc.mean, p.costs[cost], p.best.defense),
                                 default=None)
                    group.append(EqualCost(cell, cost, level, key, chosen, len(within), len(options),
                                           references.get(cell)))
                group.sort(key=lambda e: (e.chosen is None, e.chosen.best.acc.mean if e.chosen else 0.0,
                                          e.defense_key))
                for i, entry in enumerate((e for e in group if e.chosen is not None), start=1):
                    entry.rank = i  # a defense with no setting within the level is listed, unranked (0)
                out += group
    return out


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


POINT_COLUMNS = ["data", "attack", "setting", "budget", "defense_key", "defense", "knobs", "benign_acc_drop", "tv",
                 "victim_acc_defended", "best_response_acc", "best_response_acc_std", "best_response_fidelity",
                 "best_response_mode", "n_seeds", "best_response_acc_drop", "soft_acc"]


def point_values(p: Point, knobs: dict[tuple, list[str]]) -> list:
    b, soft = p.best, p.best.non_adaptive
    names = knobs.get((*p.cell, p.defense_key), [])
    return [b.data, b.attack, b.setting, b.budget, p.defense_key, b.defense, p.knob_text(names) if names else "",
            round(p.costs["benign_acc_drop"], 6), round(p.costs["tv"], 6),
            round(statistics.fmean(r.metrics["victim/acc_defended"] for r in b.winner.runs), 6),
            round(b.acc.mean, 6), round(b.acc.std, 6) if b.acc.std is not None else None, round(b.fidelity.mean, 6),
            b.winner_label, b.acc.n, round(b.acc_drop.mean, 6) if b.acc_drop.n else None,
            round(soft.metric("surrogate/acc").mean, 6) if soft else None]


EQUAL_COST_COLUMNS = ["data", "attack", "setting", "budget", "cost", "level", "rank", "defense", "chosen setting",
                      "its cost", "best response acc", "best response", "fidelity", "acc drop vs none",
                      "settings within"]


def equal_cost_columns(entries: list[EqualCost]) -> list[str]:
    """The columns shown (the setting only when runs differ in one)."""
    return [c for c in EQUAL_COST_COLUMNS if c != "setting" or any(e.cell[2] for e in entries)]


def equal_cost_values(e: EqualCost, with_setting: bool = True) -> list[str]:
    data, attack, setting, budget = e.cell
    head = [data, attack] + ([setting or "-"] if with_setting else []) + [
        str(budget), e.cost, f"≤ {e.level:g}", str(e.rank or "—"), e.defense_key]
    if e.chosen is None:
        return head + ["no setting within this cost", "", "", "", "", "", f"0/{e.settings}"]
    b = e.chosen.best
    return head + [b.defense, _num(e.chosen.costs[e.cost]), b.acc.fmt(), b.winner_label, b.fidelity.fmt(),
                   b.acc_drop.fmt(signed=True) if b.acc_drop.n else b.note or "n/a", f"{e.within}/{e.settings}"]


def equal_cost_markdown(entries: list[EqualCost]) -> str:
    text = ("## Defenses at equal cost\n\nAt each cost level, each defense's best setting among those whose cost "
            "to the defender is at most the level (lowest best-response accuracy), ranked. Costs on the benign "
            "evaluation set, seed means: " + "; ".join(f"`{k}` = {v[0]}" for k, v in COSTS.items())
            + ". Only settings that were run are chosen (no interpolation between them).\n\n")
    cols = equal_cost_columns(entries)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in equal_cost_values(e, "setting" in cols)) + " |"
              for e in entries]
    return text + "\n".join(lines) + "\n"


def tradeoff_tables(bests: list[BestResponse], levels: dict[str, tuple[float, ...]] | None = None,
                    ) -> tuple[list[Point], list[EqualCost], dict[tuple, list[str]]] | None:
    """(points, equal-cost entries, knobs) when some defense's knob is swept, else None (nothing to compare)."""
    points = points_of(bests)
    knobs = knobs_of(points)
    if not any(knobs.values()):
        return None
    return points, equal_cost(points, levels or DEFAULT_LEVELS), knobs


def wandb_tradeoff_tables(points: list[Point], entries: list[EqualCost], knobs: dict[tuple, list[str]]) -> dict:
    """The tables behind the security-against-cost plot and the equal-cost comparison, for wandb.Table."""
    return {"tradeoff": (POINT_COLUMNS, [point_values(p, knobs) for p in points]),
            "equal_cost": (EQUAL_COST_COLUMNS, [equal_cost_values(e) for e in entries])}


__all__ = ["COSTS", "DEFAULT_LEVELS", "EQUAL_COST_COLUMNS", "POINT_COLUMNS", "EqualCost", "Point", "TradeoffError",
           "check_swept", "equal_cost", "equal_cost_columns", "equal_cost_markdown", "equal_cost_values", "knobs_of",
           "point_values", "points_of", "tradeoff_tables", "wandb_tradeoff_tables"]
