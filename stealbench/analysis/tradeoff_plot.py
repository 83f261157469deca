"""The security-against-cost figure: per (data, setting, budget), the attacker's accuracy and fidelity (its best
response, solid; the non-adaptive `soft` attacker, dotted) against each cost to the defender, a line per defense
through its settings (labelled with the knob values), the undefended attacker as a dashed line."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .plots import figure_path
from .runs import BASELINE
from .tradeoff import COSTS, Point


def plot_tradeoff(points: list[Point], knobs: dict[tuple, list[str]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        figures[(p.best.data, p.best.setting, p.best.budget)].append(p)
    markers = "osD^vP*Xh<>"
    paths = []
    for (data, setting, budget), group in sorted(figures.items()):
        attacks = sorted({p.best.attack for p in group})
        defenses = sorted({p.defense_key for p in group if p.defense_key != BASELINE})
        colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(defenses)}
        fig, axes = plt.subplots(2, len(COSTS), figsize=(5.6 * len(COSTS), 7.6), squeeze=False, sharey="row")
        for r, (metric, ylabel) in enumerate((("surrogate/acc", "attacker accuracy"),
                                              ("surrogate/fidelity", "attacker fidelity"))):
            for c, (cost, (xlabel, _)) in enumerate(COSTS.items()):
                ax = axes[r][c]
                for a, attack in enumerate(attacks):
                    marker = markers[a % len(markers)]
                    for p in group:
                        if p.best.attack == attack and p.best.baseline:
                            ax.axhline(p.best.winner.metric(metric).mean, color="grey", linestyle="--",
                                       linewidth=1, label=f"undefended, {attack}")
                    for defense in defenses:
                        line = sorted((p for p in group if p.best.attack == attack and p.defense_key == defense),
                                      key=lambda p: p.costs[cost])
                        if not line:
                            continue
                        xs = [p.costs[cost] for p in line]
                        ax.plot(xs, [p.best.winner.metric(metric).mean for p in line], marker=marker,
                                color=colors[defense], label=f"{defense}, {attack}: best response")
                        soft = [p.best.non_adaptive for p in line]
                        if all(s is not None for s in soft):
                            ax.plot(xs, [s.metric(metric).mean for s in soft], marker=marker, linestyle=":",
                                    color=colors[defense], alpha=0.5, fillstyle="none",
                                    label=f"{defense}, {attack}: soft (non-adaptive)")
                        names = knobs.get((*line[0].cell, defense), [])
                        if names and r == 0:
                            for p in line:
                                ax.annotate(p.knob_text(names), (p.costs[cost], p.best.acc.mean), fontsize=6,
                                            xytext=(3, 3), textcoords="offset points")
                ax.set_xlabel(xlabel, fontsize=9)
                ax.grid(alpha=0.3)
                if c == 0:
                    ax.set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=6, loc="best")
        fig.suptitle(f"{data}, {budget} queries" + (f", {setting}" if setting else "")
                     + ": security against cost (seed means; attacker = best response over label modes)",
                     fontsize=10)
        fig.tight_layout()
        path = figure_path(out_dir, "tradeoff", data, f"b{budget}", setting)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = ["plot_tradeoff"]
