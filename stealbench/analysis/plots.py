"""The leaderboard's figures: accuracy and fidelity against queries, utility cost against attacker accuracy."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .rows import Row
from .runs import BASELINE, Run

def _mean_curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float]]:
    by_q: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        for p in run.curve:
            by_q[p["queries"]].append(p[key])
    qs = sorted(by_q)
    means = [statistics.fmean(by_q[q]) for q in qs]
    stds = [statistics.stdev(by_q[q]) if len(by_q[q]) > 1 else 0.0 for q in qs]
    return qs, means, stds


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "all"


def plot_curves(rows: list[Row], out_dir: Path) -> list[Path]:
    """Per (data, label mode, setting): accuracy and fidelity vs queries, a column per attack, a line per defense.
    Each seed contributes the curve of its largest-budget run; lines are seed means, bands ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[tuple, dict[str, dict[str, dict[int, Run]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        slot = figures[(row.data, row.label_mode, row.setting)][row.attack].setdefault(row.defense, {})
        for run in row.runs:
            if run.seed not in slot or run.budget > slot[run.seed].budget:
                slot[run.seed] = run
    paths = []
    for (data, label_mode, setting), attacks in sorted(figures.items()):
        names = sorted(attacks)
        fig, axes = plt.subplots(2, len(names), figsize=(max(4.6 * len(names), 7.5), 7.4), squeeze=False,
                                 sharey="row")
        defenses = sorted({d for a in attacks.values() for d in a}, key=lambda d: (d != BASELINE, d))
        colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(defenses)}
        for col, attack in enumerate(names):
            for r, (key, ylabel) in enumerate((("surrogate/acc", "surrogate accuracy"),
                                               ("surrogate/fidelity", "surrogate fidelity"))):
                ax = axes[r][col]
                victim_accs = []
                for defense in defenses:
                    seeds = attacks[attack].get(defense)
                    if not seeds:
                        continue
                    runs = list(seeds.values())
                    victim_accs += [run.metrics["victim/acc"] for run in runs]
                    qs, means, stds = _mean_curve(runs, key)
                    # the undefended line dashed and on top, so it stays visible where a defense coincides
                    style = dict(color=colors[defense], marker="o", markersize=3,
                                 linestyle="--" if defense == BASELINE else "-",
                                 zorder=3 if defense == BASELINE else 2)
                    ax.plot(qs, means, label=f"{defense} (n={len(runs)})", **style)
                    ax.fill_between(qs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                    color=colors[defense], alpha=0.15, linewidth=0)
                if key == "surrogate/acc" and victim_accs:
                    ax.axhline(statistics.fmean(victim_accs), color="grey", linestyle=":", linewidth=1,
                               label="victim accuracy")
                ax.set_xscale("log")
                ax.grid(alpha=0.3, which="both")
                ax.set_xlabel("queries (log scale)")
                if col == 0:
                    ax.set_ylabel(ylabel)
                if r == 0:
                    ax.set_title(f"attack: {attack}", fontsize=10)
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{data}, {label_mode} labels" + (f", {setting}" if setting else "")
                     + "\nmean over seeds (band ± std); each seed's largest-budget run", fontsize=10)
        fig.tight_layout()
        path = figure_path(out_dir, "curves", data, label_mode, setting)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


#: readable part of a figure's file name; the settings it leaves out are told apart by a hash
_FIGURE_PREFIX_CHARS = 60


def figure_path(out_dir: Path, kind: str, data: str, label_mode: str, setting: str) -> Path:
    """`curves_digits_soft.png`, or `curves_digits_soft_victim.epochs_5_..._1a2b3c4d.png` when runs differ in
    settings: file systems refuse names over 255 bytes and runs may differ in a dozen settings, so the readable
    part is cut short and a hash of the whole (data, label mode, setting) keeps the names unique."""
    readable = _slug("_".join(filter(None, (data, label_mode, setting))))
    if not setting and len(readable) <= _FIGURE_PREFIX_CHARS:
        return out_dir / f"{kind}_{readable}.png"
    digest = hashlib.sha1(json.dumps([data, label_mode, setting]).encode()).hexdigest()[:8]
    return out_dir / f"{kind}_{readable[:_FIGURE_PREFIX_CHARS].rstrip('_')}_{digest}.png"


def plot_utility(rows: list[Row], out_dir: Path) -> list[Path]:
    """Per (data, label mode, setting): utility cost of each defense (x) against the attacker's accuracy at each
    attack's largest budget (y); a panel per cost measure, color = defense, marker = attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = (("defense/kl_nats", "KL(y‖y') nats/query"), ("defense/kl_nats_rev", "KL(y'‖y) nats/query"),
                ("defense/l1", "L1(y, y')"), (None, "victim accuracy change (defended − clean)"))
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.data, row.label_mode, row.setting)].append(row)
    paths = []
    markers = "osD^vP*Xh<>"
    for (data, label_mode, setting), group in sorted(groups.items()):
        top = {}
        for row in group:  # each attack's largest budget
            top[row.attack] = max(top.get(row.attack, 0), row.budget)
        chosen = [r for r in group if r.budget == top[r.attack]]
        defenses = sorted({r.defense for r in chosen}, key=lambda d: (d != BASELINE, d))
        attacks = sorted({r.attack for r in chosen})
        colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(defenses)}
        fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 4.3), sharey=True)
        for ax, (key, xlabel) in zip(axes, measures):
            for row in chosen:
                x = row.utility_change if key is None else row.metric(key)
                y = row.metric("surrogate/acc")
                ax.errorbar([x.mean], [y.mean], yerr=[y.std or 0.0], xerr=[x.std or 0.0], linestyle="none",
                            marker=markers[attacks.index(row.attack) % len(markers)], color=colors[row.defense],
                            markersize=7, capsize=2)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("attacker (surrogate) accuracy")
        handles = [plt.Line2D([], [], color=colors[d], marker="o", linestyle="none", label=d) for d in defenses]
        handles += [plt.Line2D([], [], color="black", marker=markers[i % len(markers)], linestyle="none",
                               label=f"{a} @ {top[a]}") for i, a in enumerate(attacks)]
        axes[-1].legend(handles=handles, fontsize=7, loc="best")
        fig.suptitle(f"{data}, {label_mode} labels" + (f", {setting}" if setting else "")
                     + ": defense utility cost vs attacker accuracy\n(each attack at its largest budget; mean ± std "
                     "over seeds)",
                     fontsize=10)
        fig.tight_layout()
        path = figure_path(out_dir, "utility", data, label_mode, setting)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_kl(rows: list[dict[str, Any]], rep, path: Path) -> Path:
    """Both KL directions (nats per query, benign evaluation set) against gamma, a line per beta, seed means;
    the paper's figure as a horizontal line when the reproduction file names it (paper.kl_nats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = list(rep.utility.params)
    x_key = "gamma" if "gamma" in params else params[-1]
    line_key = next((p for p in params if p != x_key), None)
    several_data = len({row.get("data") for row in rows}) > 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("kl_nats", "KL(y‖y') nats/query"), ("kl_nats_rev", "KL(y'‖y) nats/query"),
              ("acc_change", "defended − clean accuracy"))
    for ax, (metric, title) in zip(axes, panels):
        groups: dict[Any, dict[Any, list[float]]] = {}
        for row in rows:  # a line per data set and value of the other parameter
            line = (row.get("data") if several_data else None, row.get(line_key))
            groups.setdefault(line, {}).setdefault(row[x_key], []).append(row[metric])
        for (data, line), points in sorted(groups.items(), key=lambda kv: str(kv[0])):
            xs = sorted(points)
            label = " ".join(part for part in (data, f"{line_key}={line}" if line_key else None) if part)
            ax.plot(xs, [statistics.fmean(points[x]) for x in xs], marker="o", label=label or None)
        target = (rep.paper.get("kl_nats") if metric.startswith("kl") else None)
        if isinstance(target, (int, float)):
            ax.axhline(target, color="grey", linestyle=":", label=f"paper: {target} nats")
        ax.set_xscale("log")
        ticks = sorted({row[x_key] for row in rows})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # the swept values, not 2×10⁻¹ style log ticks
        ax.minorticks_off()
        ax.set_xlabel(x_key)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{rep.utility.defense} on the evaluation set: cost to benign users (mean over victims)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["figure_path", "plot_curves", "plot_kl", "plot_utility"]
