"""Measured records for claims (stealbench.analysis.claims): paired grid runs read at every checkpoint, and utility sweeps.

Runs: the leaderboard's rows give the labels, grouping and pairing (stealbench.analysis.rows); each seed's
largest-budget run gives the curve. Every checkpoint q of the undefended curve becomes a record at budget q:
surrogate accuracy, the paired accuracy drop (undefended minus defended, same seed, at q) and the query
multiplier at q (`curves.query_multiplier`, reading both curves alike). An adaptive label mode without undefended
runs of its own is paired with the undefended soft-label attacker (`baseline_label_mode`). This is what runs at budget q
would measure, because the built-in attacks train from scratch at every checkpoint on a prefix of the same
queries (JBDA with reinit_each_round, natural samples with retrain_from_scratch), each training call drawing the
same seed whatever the budget; a warm-started attack would need one run per budget instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..results import RESULTS_FILE
from .claims import Record, Value
from .curves import query_multiplier, value_at
from .labels import pool_key
from .rows import build_rows
from .runs import BASELINE, Run

_RUN_METRICS = {"victim_acc": "victim/acc", "victim_acc_defended": "victim/acc_defended",
                "top1_changed": "defense/top1_changed", "kl_nats": "defense/kl_nats",
                "kl_nats_rev": "defense/kl_nats_rev"}


def value(values: list[float], unit: str = "") -> Value:
    return Value(list(values), unit=unit)


def defense_params(run: Run) -> dict[str, Any]:
    part = run.config.get("defense")
    return dict((part.get("init_args") or {}) if isinstance(part, dict) else {})


def setting_label(defense_key: str, params: dict[str, Any]) -> str:
    if defense_key == "deceptive" and {"beta", "gamma"} <= set(params):
        return f"RS β={params['beta']:g} γ={params['gamma']:g}"
    return defense_key + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")


def _extra(run: Run) -> dict[str, float]:
    """extra_metrics of a run folder's results.json (the oracle's statistics over the attacker's queries)."""
    try:
        return json.loads((Path(run.source) / RESULTS_FILE).read_text()).get("extra_metrics") or {}
    except (OSError, ValueError):
        return {}


def run_records(runs: list[Run]) -> tuple[list[Record], list[tuple[str, str]]]:
    """Records per (data, attack, label mode, setting, defense, checkpoint); returns (records, problems)."""
    rows, problems = build_rows(runs)
    # each seed's largest-budget run per (group, defense label)
    longest: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for row in rows:
        for run in row.runs:
            slot = longest[(row.data, row.attack, row.label_mode, row.setting, row.defense)]
            if run.seed not in slot or run.budget > slot[run.seed].budget:
                slot[run.seed] = run
    # per-seed accuracies, kept to pair soft and hard attackers afterwards
    per_seed_acc: dict[tuple, dict[int, float]] = {}
    records: list[Record] = []
    several_data = len({key[0] for key in longest}) > 1  # then labels name the victim's data set
    for (data, attack, label_mode, setting, defense), by_seed in sorted(longest.items()):
        base = longest.get((data, attack, label_mode, setting, BASELINE), {})
        base_mode = label_mode
        if not base and label_mode not in ("soft", "hard"):
            # an adaptive mode (the best response to one defense) is not run against no defense: its drop is
            # measured from the undefended soft-label attacker, the attacker the defense has to beat
            base, base_mode = longest.get((data, attack, "soft", setting, BASELINE), {}), "soft"
        any_run = next(iter(by_seed.values()))
        key, params = any_run.identity["defense"], defense_params(any_run)
        baseline = defense == BASELINE and key == BASELINE
        queries = sorted({p["queries"] for run in by_seed.values() for p in run.curve})
        for q in queries:
            accs = {s: value_at(r.curve, q) for s, r in by_seed.items()}
            accs = {s: a for s, a in accs.items() if a is not None}
            if not accs:
                continue
            per_seed_acc[(data, attack, label_mode, setting, defense, q)] = accs
            # defense parameters first: a parameter named like an identity field must not overwrite it
            fields = {**params, "data": data, "attack": any_run.identity["attack"], "attack_label": attack,
                      "label_mode": label_mode, "setting": setting, "defense": key, "defense_label": defense,
                      "budget": int(q), "seeds": sorted(accs), "pool": pool_key(any_run),
                      "baseline_label_mode": None if baseline or not base else base_mode}
            metrics = {"surrogate_acc": value(list(accs.values()))}
            context = ""
            if not baseline and base:
                metrics.update(_paired(base, by_seed, q))
                if "baseline_acc" in metrics:
                    context = (f"none{'' if base_mode == label_mode else f' ({base_mode})'} "
                               f"{metrics['baseline_acc'].mean:.3f} → "
                               f"{metrics['surrogate_acc'].mean:.3f}")
            if all(r.budget == q for r in by_seed.values()):  # figures of whole runs: at their own budget
                for name, metric in _RUN_METRICS.items():
                    metrics[name] = value([r.metrics[metric] for r in by_seed.values()])
                metrics["victim_acc_change"] = value([r.metrics["victim/acc_defended"] - r.metrics["victim/acc"]
                                                      for r in by_seed.values()])
                extras = [_extra(r) for r in by_seed.values()]
                for name in ("oracle/kl_nats", "oracle/kl_nats_rev"):
                    vals = [e[name] for e in extras if isinstance(e.get(name), (int, float))]
                    if vals:
                        metrics[name.replace("/", "_")] = value(vals)
            label = (f"{data}: " if several_data else "") + \
                f"{attack} {label_mode}, {setting_label(key, params)} @ {int(q)}" + (f" [{setting}]" if setting else "")
            records.append(Record("runs", fields, metrics, label, context))
    _hard_advantage(records, per_seed_acc)
    return records, problems


def _paired(base: dict[int, Run], defended: dict[int, Run], q: float) -> dict[str, Value]:
    base_acc, drops, rel, errors, error_ceilings, lows, highs, ceilings = [], [], [], [], [], [], [], []
    for seed, run in sorted(defended.items()):
        ref = base.get(seed)
        if ref is None:
            continue
        a0, a1 = value_at(ref.curve, q), value_at(run.curve, q)
        if a0 is None or a1 is None:
            continue
        base_acc.append(a0)
        drops.append(a0 - a1)
        rel.append((a0 - a1) / a0 if a0 > 0 else 0.0)
        # error-rate amplification (Orekondy et al. 2020), 0.1% floor; at most 1 / (1 - a0): all answers wrong
        errors.append((1 - a1) / max(1 - a0, 1e-3))
        error_ceilings.append(1 / max(1 - a0, 1e-3))
        low, high = query_multiplier(ref.curve, run.curve, int(q), a0)
        lows.append(low)
        highs.append(high)
        ceilings.append(run.curve[-1]["queries"] / q)
    if not drops:
        return {}
    out = {"baseline_acc": value(base_acc), "acc_drop": value(drops), "acc_drop_relative": value(rel),
           "error_multiplier": Value(errors, list(errors), "×", max(error_ceilings))}
    # At a curve's last checkpoint there are no further queries to spend: a defended attacker short of the target
    # gives only "> 1×", which says nothing, so the multiplier is read where the curves extend beyond q.
    if all(q < run.curve[-1]["queries"] for run in defended.values()):
        out["query_multiplier"] = Value(lows, highs, "×", max(ceilings))
    return out


def _hard_advantage(records: list[Record], per_seed_acc: dict[tuple, dict[int, float]]) -> None:
    """On records of attackers that use the probabilities (soft or adaptive label modes) against a defense:
    hard-label minus that attacker's accuracy, same defense, budget and seeds. Positive: the attacker does better
    by discarding the probabilities."""
    for rec in records:
        f = rec.fields
        if f["label_mode"] == "hard" or f["defense"] == BASELINE:
            continue
        key = (f["data"], f["attack_label"], f["label_mode"], f["setting"], f["defense_label"], f["budget"])
        soft = per_seed_acc.get(key, {})
        hard = per_seed_acc.get((*key[:2], "hard", *key[3:]), {})
        diffs = [hard[s] - soft[s] for s in sorted(set(soft) & set(hard))]
        if diffs:
            rec.metrics["hard_advantage"] = value(diffs)


def utility_records(per_victim: list[tuple[int, list[dict[str, Any]]]], defense: str, data: str,
                    params: list[str], name_data: bool = False) -> list[Record]:
    """Utility sweeps of several victims (one per seed) -> one record per setting, mean ± std over victims.
    `name_data`: labels name the data set (a reproduction with victims of several data sets)."""
    by_setting: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for _, rows in per_victim:
        for row in rows:
            by_setting[tuple(row[p] for p in params)].append(row)
    records = []
    for setting, rows in by_setting.items():
        fields = {"data": data, "defense": defense, **dict(zip(params, setting)), "seeds": [s for s, _ in per_victim]}
        names = [k for k, v in rows[0].items() if k not in params and isinstance(v, (int, float))]
        metrics = {k: value([r[k] for r in rows]) for k in names}
        context = (f"victim acc {metrics['acc'].mean:.4f} → {metrics['acc_defended'].mean:.4f}"
                   if {"acc", "acc_defended"} <= set(metrics) else "")
        details = ", ".join(f"{text} {metrics[k].mean:.4f}" for k, text in (
            ("top1_changed", "top-1 changed"), ("top1_changed_confident", "where max y > ½"),
            ("kl_nats", "KL(y‖y′)"), ("kl_nats_rev", "KL(y′‖y)"), ("l1", "L1")) if k in metrics)
        label = (f"{data}: " if name_data else "") + setting_label(defense, dict(zip(params, setting)))
        records.append(Record("utility", fields, metrics, label, context, details))
    return records


__all__ = ["defense_params", "run_records", "setting_label", "utility_records", "value"]
