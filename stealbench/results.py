"""The run folder: results.json, config.yaml and the curve plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1

#: DESIGN.md §3 metric keys (W&B summary keys = results.json keys)
METRIC_KEYS = ("victim/acc", "victim/acc_defended", "defense/top1_changed", "defense/kl_nats", "defense/kl_nats_rev",
               "defense/l1", "surrogate/acc", "surrogate/fidelity", "queries")
CURVE_KEYS = ("queries", "round", "surrogate/acc", "surrogate/fidelity")
#: results.json's optional `price` section (stealbench.defender.cost): serving time of the defense over the
#: victim's forward pass, and the defense's state size; null where not measured
PRICE_KEYS = ("defense/cost_ratio", "defense/state_size")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # results.json appears whole or not at all


def plot_curve(path: Path, curve: list[dict[str, Any]], title: str, victim_acc: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = [p["queries"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(queries, [p["surrogate/acc"] for p in curve], marker="o", label="surrogate accuracy")
    ax.plot(queries, [p["surrogate/fidelity"] for p in curve], marker="s", label="surrogate fidelity")
    if victim_acc is not None:
        ax.axhline(victim_acc, color="grey", linestyle="--", label="victim accuracy")
    if len(queries) > 1 and min(queries) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("on the evaluation set")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
