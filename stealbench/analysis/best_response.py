"""The attacker's best response: per (data, attack family, setting, budget, defense), the strongest attacker variant
that ran against it (label mode with its options, attack parameters), and the defense judged against it.

Choice of the winner: the variant with the highest *mean* surrogate accuracy over its seeds; its per-seed values
are then reported as they are. Taking the best variant per seed instead would pick the luckiest draw of every seed
(a max over noisy values, biased upwards), and would mix variants inside one mean. The winner is an upper bound
over the variants that were run: the attacker is credited with knowing which one works best (the worst case for
the defense, as defense papers since ModelGuard evaluate).

The undefended reference is the undefended attacker's best response too, chosen the same way over the variants
that ran without a defense: the drop is then what the defense costs an attacker who plays best in each world.
Against the undefended `soft` run instead, a variant that is stronger even without a defense (hard labels can be)
would be credited to the defense as "no loss". The accuracy drop is paired by seed (seeds in both winners); the
query multiplier reads both winners' curves as stealbench.analysis.curves does (each seed's largest-budget run of
that variant). The non-adaptive numbers (`soft` rows) stay in their rows, beside the best response.

Variants are whatever ran: any label-mode key in results.json's identity and any options in its config; nothing
here lists label modes. Defenses are ranked within (data, attack family, setting, budget) by the best response's
accuracy, lower first (their worst case).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .curves import Multiplier, query_multiplier
from .describe import Stat
from .rows import Row, largest_budget_runs
from .runs import BASELINE

#: the label mode of an attacker that ignores the defense (shown beside the best response, never replaced by it)
NON_ADAPTIVE = "soft"


@dataclass
class BestResponse:
    data: str
    attack: str  # the attack family (registry key)
    setting: str
    budget: int
    defense: str
    variants: list[Row]  # every attacker variant that ran against this defense in this cell
    winner: Row
    acc_drop: Stat = field(default_factory=lambda: Stat([]))
    multiplier: Multiplier = field(default_factory=lambda: Multiplier([]))
    baseline: bool = False
    rank: int = 0
    note: str = ""

    @property
    def acc(self) -> Stat:
        return self.winner.metric("surrogate/acc")

    @property
    def fidelity(self) -> Stat:
        return self.winner.metric("surrogate/fidelity")

    @property
    def mode(self) -> str:
        """The winning label mode (with the options that tell its variants apart)."""
        return self.winner.label_mode

    @property
    def attack_variant(self) -> str:
        """The winning attack label (the family key plus the parameters that vary between its runs)."""
        return self.winner.attack

    @property
    def winner_label(self) -> str:
        """The winner as one label: the mode, prefixed by the attack variant when the cell has several."""
        several = len({r.attack for r in self.variants}) > 1
        return f"{self.winner.attack} · {self.winner.label_mode}" if several else self.winner.label_mode

    @property
    def non_adaptive(self) -> Row | None:
        """The `soft` row of the cell (the best one when several attack variants ran soft)."""
        soft = [r for r in self.variants if r.label_mode == NON_ADAPTIVE]
        return _strongest(soft) if soft else None

    def variant_means(self) -> str:
        return " ".join(f"{r.attack + '·' if len({v.attack for v in self.variants}) > 1 else ''}{r.label_mode}:"
                        f"{r.metric('surrogate/acc').mean:.4f}" for r in self.variants)


def _strongest(rows: list[Row]) -> Row:
    """Highest mean surrogate accuracy; ties go to the more seeds, then to the non-adaptive attacker (an equal
    adaptive one adds nothing), then the name (deterministic)."""
    return min(rows, key=lambda r: (-r.metric("surrogate/acc").mean, -len(r.runs), r.label_mode != NON_ADAPTIVE,
                                    r.attack, r.label_mode))


def cell_key(row: Row) -> tuple:
    return (row.data, row.attack_family, row.setting, row.budget)


def best_responses(rows: list[Row]) -> list[BestResponse]:
    """One BestResponse per (data, attack family, setting, budget, defense); sets `row.best` on every row."""
    cells: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        cells[(*cell_key(row), row.defense)].append(row)
    out = [BestResponse(k[0], k[1], k[2], k[3], k[4], sorted(v, key=lambda r: (r.attack, r.label_mode)),
                        _strongest(v)) for k, v in cells.items()]
    longest = largest_budget_runs(rows)
    baselines = {(b.data, b.attack, b.setting, b.budget): b for b in out
                 if b.defense == BASELINE and b.winner.defense_key == BASELINE}
    for best in out:
        for row in best.variants:
            row.best = best
        if best.defense == BASELINE and best.winner.defense_key == BASELINE:
            best.baseline = True
            continue
        base = baselines.get((best.data, best.attack, best.setting, best.budget))
        if base is None:
            best.note = "no undefended run at this budget"
            continue
        _compare(best, base, longest)
    by_cell: dict[tuple, list[BestResponse]] = defaultdict(list)
    for best in out:
        by_cell[(best.data, best.attack, best.setting, best.budget)].append(best)
    for group in by_cell.values():
        group.sort(key=lambda b: (b.acc.mean, b.defense))
        for i, best in enumerate(group, start=1):
            best.rank = i
    out.sort(key=_order)
    return out


def _order(best: BestResponse) -> tuple:
    return (best.data, best.attack, best.setting, best.budget, best.rank)


def of_rows(rows: list[Row]) -> list[BestResponse]:
    """The best responses already attached to `rows` (by :func:`best_responses`), in table order."""
    return sorted({id(r.best): r.best for r in rows if r.best is not None}.values(), key=_order)


def _compare(best: BestResponse, base: BestResponse, longest: dict) -> None:
    """Accuracy drop (paired by seed) and query multiplier of the defended winner against the undefended one."""
    base_by_seed = {r.seed: r for r in base.winner.runs}
    drops = [base_by_seed[r.seed].metrics["surrogate/acc"] - r.metrics["surrogate/acc"]
             for r in best.winner.runs if r.seed in base_by_seed]
    w, b = best.winner, base.winner
    curves = longest[(w.data, w.attack, w.label_mode, w.setting, w.defense)]
    base_curves = longest[(b.data, b.attack, b.label_mode, b.setting, b.defense)]
    mults = []
    for seed, ref in sorted(base_by_seed.items()):
        defended = curves.get(seed)
        if defended is not None:
            mults.append((seed, *query_multiplier(base_curves.get(seed, ref).curve, defended.curve, best.budget,
                                                  ref.metrics["surrogate/acc"])))
    best.acc_drop, best.multiplier = Stat(drops), Multiplier(mults)
    if not drops:
        best.note = "no undefended run with a matching seed"


__all__ = ["NON_ADAPTIVE", "BestResponse", "best_responses", "cell_key", "of_rows"]
