"""`stealbench leaderboard`: finished runs compared side by side (terminal table, Markdown, CSV, plots).

Reads run folders (results.json; no server) or, with --wandb ENTITY/PROJECT, the W&B runs of a project. Never imports
Lightning or torch. Every run is validated first; failed, partial or malformed runs are listed and skipped, never
averaged in.

Rows: one per (data, attack, label mode, other settings, budget, defense), seeds aggregated as mean ± sample std.
Derived per row, against the undefended (`none`) runs of the same data, attack, label mode and settings:

- accuracy drop: undefended surrogate accuracy minus defended surrogate accuracy at the same budget, paired by
  seed (mean ± std over the seeds present in both).
- query multiplier: A = the accuracy the undefended attack reached with B queries (its curve at B, from the
  seed's largest-budget undefended run). Queries needed to reach A are read off each curve the same way, the
  first checkpoint crossing of A, interpolated linearly in log(queries); multiplier = queries needed against the
  defense / queries needed without it (= B when the undefended curve rises monotonically; reading both curves
  alike makes a defense that changes nothing score exactly 1x on noisy curves). When the defended curve never
  reaches A the needed queries exceed its last checkpoint Q: reported as "> Q/B" (a lower bound); when its first
  checkpoint q0 already reaches A, as "<= q0/B". Over seeds: "m ± s" when every seed crossed, "≥ m" when some
  only give lower bounds (mean of crossings and bounds, itself a lower bound), "> m" when none crossed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .arguments import ArgumentParser, check_folder
from .errors import StealbenchError
from .results import CURVE_KEYS, METRIC_KEYS, RESULTS_FILE

IDENTITY_KEYS = ("data", "defense", "attack", "victim_arch", "surrogate_arch", "budget", "seed", "label_mode")
BASELINE = "none"
#: config keys that do not change what a run measures (left out when telling settings apart)
_IGNORED_CONFIG = ("seed", "budget", "label_mode", "name", "output_dir", "progress_bar", "wandb", "defense", "attack",
                   "data.class_path", "data.init_args.root", "data.init_args.download", "victim.cache",
                   "victim.cache_dir", "victim.checkpoint", "trainer.accelerator", "trainer.devices",
                   "trainer.strategy", "trainer.num_nodes", "trainer.logger", "trainer.callbacks",
                   "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.default_root_dir",
                   "trainer.enable_checkpointing")


class MalformedRun(StealbenchError):
    """A run that cannot enter a leaderboard (failed, partial, unreadable, or missing keys)."""


# ----------------------------------------------------------------------------------------------------- loading

@dataclass
class Run:
    source: str
    identity: dict[str, Any]
    metrics: dict[str, float]
    curve: list[dict[str, Any]]
    config: dict[str, Any]
    defense_label: str = ""
    attack_label: str = ""
    setting: str = ""

    @property
    def seed(self) -> int:
        return int(self.identity["seed"])

    @property
    def budget(self) -> int:
        return int(self.identity["budget"])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_results(payload: Any, source: str) -> Run:
    """results.json content -> Run, or MalformedRun saying what is wrong."""
    if not isinstance(payload, dict):
        raise MalformedRun(f"results are a {type(payload).__name__}, not a mapping")
    if payload.get("status") != "complete":
        raise MalformedRun(f"status is {payload.get('status')!r}, not 'complete'")
    identity, metrics, curve = payload.get("identity"), payload.get("metrics"), payload.get("curve")
    if not isinstance(identity, dict):
        raise MalformedRun("no `identity` mapping")
    missing = [k for k in IDENTITY_KEYS if identity.get(k) in (None, "", [], {})]
    if missing:
        raise MalformedRun(f"identity lacks {', '.join(missing)}")
    identity = {k: _identity_text(v) if k not in ("budget", "seed") else v for k, v in identity.items()}
    for key in ("budget", "seed"):
        if not isinstance(identity[key], int) or isinstance(identity[key], bool):
            raise MalformedRun(f"identity {key} is {identity[key]!r}, not an integer")
    if not isinstance(metrics, dict):
        raise MalformedRun("no `metrics` mapping")
    bad = [k for k in METRIC_KEYS if not _finite(metrics.get(k))]
    if bad:
        raise MalformedRun(f"metrics lack finite values for {', '.join(bad)}")
    if not isinstance(curve, list) or not curve:
        raise MalformedRun("empty or missing `curve`")
    points = []
    for p in curve:
        if not isinstance(p, dict) or not all(_finite(p.get(k)) for k in CURVE_KEYS):
            raise MalformedRun(f"curve point {p!r} lacks one of {', '.join(CURVE_KEYS)}")
        if p["queries"] <= 0:
            raise MalformedRun(f"curve point with {p['queries']} queries")
        points.append(p)
    points.sort(key=lambda p: p["queries"])
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    return Run(source, identity, {k: float(metrics[k]) for k in METRIC_KEYS}, points, config)


def _identity_text(value: Any) -> str:
    """Identity values label rows and are compared and sorted: plain text. A list (e.g. an ensemble of
    architectures) or a mapping reads as its JSON text, so it groups like any other value instead of crashing."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def load_run_folder(folder: Path) -> Run:
    path = folder / RESULTS_FILE
    if not path.exists():
        if (folder / "error.txt").exists():
            lines = (folder / "error.txt").read_text(errors="replace").strip().splitlines()
            raise MalformedRun(f"failed run (error.txt: {lines[-1] if lines else 'empty'})")
        raise MalformedRun("no results.json (still running, interrupted, or not a run)")
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MalformedRun(f"unreadable results.json: {exc}") from exc
    return validate_results(payload, str(folder))


def _looks_like_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in (RESULTS_FILE, "config.yaml", "error.txt"))


def find_run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders under `paths` (a run folder itself, or any folder above run folders). wandb/ dirs are pruned."""
    found: list[Path] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise StealbenchError(f"{root} does not exist")
        if _looks_like_run(root):
            found.append(root)
            continue
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if here != root and _looks_like_run(here):
                found.append(here)
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if d != "wandb" and not d.startswith("."))
    return sorted(set(found))


def load_folders(paths: Iterable[str | Path]) -> tuple[list[Run], list[tuple[str, str]]]:
    runs, problems = [], []
    for folder in find_run_folders(paths):
        try:
            runs.append(load_run_folder(folder))
        except MalformedRun as exc:
            problems.append((str(folder), str(exc)))
    return runs, problems


def run_from_wandb(wrun: Any) -> Run:
    """A W&B public-API run -> Run (identity from config, §3 metrics from summary, curve from history)."""
    config = dict(wrun.config)
    summary = {k: wrun.summary.get(k) for k in METRIC_KEYS}
    if getattr(wrun, "state", "finished") != "finished":
        raise MalformedRun(f"W&B state is {wrun.state!r}, not 'finished'")
    curve = []
    for row in wrun.scan_history(keys=list(CURVE_KEYS)):
        curve.append({k: row.get(k) for k in CURVE_KEYS})
    payload = {"status": "complete", "identity": {k: config.get(k) for k in IDENTITY_KEYS}, "metrics": summary,
               "curve": curve, "config": config.get("config") or {}}
    return validate_results(payload, f"wandb:{'/'.join(getattr(wrun, 'path', [wrun.id]))}")


def load_wandb(path: str, tags: list[str] | None = None) -> tuple[list[Run], list[tuple[str, str]]]:
    import wandb

    filters: dict[str, Any] = {"tags": {"$in": tags}} if tags else {}
    runs, problems = [], []
    for wrun in wandb.Api().runs(path, filters=filters):
        if getattr(wrun, "job_type", None) == "leaderboard":
            continue
        try:
            runs.append(run_from_wandb(wrun))
        except MalformedRun as exc:
            problems.append((f"wandb:{path}/{wrun.id} ({wrun.name})", str(exc)))
    return runs, problems


# ----------------------------------------------------------------------------------------------------- labels

def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(cfg, dict):
        return {prefix[:-1]: cfg}
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in _IGNORED_CONFIG)


def _fmt_param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def assign_labels(runs: list[Run]) -> None:
    """Label defenses by key plus their init parameters, attacks by key plus the init parameters that differ
    between runs of the same key, and
    every run by the other settings that differ between runs (victim epochs, data split, ...)."""
    for part in ("defense", "attack"):
        by_key: dict[str, list[dict]] = defaultdict(list)
        params = {}
        for run in runs:
            args = (run.config.get(part) or {}).get("init_args") or {} if isinstance(run.config.get(part), dict) \
                else {}
            params[id(run)] = _flatten(args) if args else {}
            by_key[run.identity[part]].append(params[id(run)])
        # defenses show all their (few) parameters, attacks only those that differ between runs
        varying = {key: sorted({k for p in plist for k in p
                                if part == "defense" or len({_fmt_param(q.get(k)) for q in plist}) > 1})
                   for key, plist in by_key.items()}
        for run in runs:
            key = run.identity[part]
            shown = [f"{k}={_fmt_param(params[id(run)].get(k))}" for k in varying[key]]
            setattr(run, f"{part}_label", f"{key}({', '.join(shown)})" if shown else key)
    flat = {id(run): {k: v for k, v in _flatten(run.config).items() if not _ignored(k)} for run in runs}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({_fmt_param(f.get(k)) for f in flat.values()}) > 1]
    for run in runs:
        archs = []
        if any(r.identity["victim_arch"] != run.identity["victim_arch"] for r in runs):
            archs.append(f"victim={run.identity['victim_arch']}")
        if any(r.identity["surrogate_arch"] != run.identity["surrogate_arch"] for r in runs):
            archs.append(f"surrogate={run.identity['surrogate_arch']}")
        run.setting = ", ".join(archs + [f"{k}={_fmt_param(flat[id(run)].get(k))}" for k in varying])


# ----------------------------------------------------------------------------------------------------- statistics

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


def distinct_query_points(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve sorted by queries with one point per query count: the last checkpoint recorded at that count.

    A surrogate can be evaluated more than once at the same query count (trained further without new queries);
    the attacker's model at q queries is then the last one. Never the best one: that would select on the test set.
    One point per count also keeps the log-space interpolation free of zero-width segments (log(q/q) = 0).
    """
    by_queries: dict[float, dict[str, Any]] = {}
    for p in curve:  # in recorded order, so a later checkpoint replaces an earlier one at the same count
        by_queries[p["queries"]] = p
    return [by_queries[q] for q in sorted(by_queries)]


def queries_to_reach(curve: list[dict[str, Any]], target: float) -> tuple[float, str]:
    """(queries, bound) to reach `target` surrogate accuracy on a curve: bound '=' (interpolated crossing),
    '>' (never reached: queries is the last checkpoint) or '<=' (the first checkpoint already reaches it)."""
    points = distinct_query_points(curve)
    prev = None
    for p in points:
        if p["surrogate/acc"] >= target:
            if prev is None:
                return float(p["queries"]), "<="
            q0, a0, q1, a1 = prev["queries"], prev["surrogate/acc"], p["queries"], p["surrogate/acc"]
            t = (target - a0) / (a1 - a0) if a1 != a0 else 1.0
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0))), "="
        prev = p
    return float(points[-1]["queries"]), ">"


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
                     fallback_target: float) -> tuple[float, str]:
    """(multiplier, bound). Target A: the undefended curve's accuracy at `budget` (else `fallback_target`, the
    budget run's final accuracy). Both curves are read the same way, first crossing of A in log(queries), so that a
    defense identical to no defense scores exactly 1x even when the curves are not monotone."""
    target = value_at(undefended, budget)
    target = fallback_target if target is None else target
    q_def, b_def = queries_to_reach(defended, target)
    q_und, b_und = queries_to_reach(undefended, target - 1e-12)
    if b_und == ">":  # cannot happen when the target comes from this curve; be safe
        q_und, b_und = float(budget), "="
    if b_und == "<=" and q_und >= budget:  # the budget is the first checkpoint: exact
        b_und = "="
    if b_def == ">":
        bound = ">"
    elif b_und == "=":
        bound = b_def
    elif b_def == "=":
        bound = ">="
    else:
        bound = "mixed"
    return q_def / q_und, bound


@dataclass
class Multiplier:
    per_seed: list[tuple[int, float, str]]  # (seed, multiplier, bound)

    def summary(self) -> tuple[float | None, float | None, str]:
        """(mean, std, bound) with bound '=', '>=', '>', '<=' or 'mixed'."""
        if not self.per_seed:
            return None, None, ""
        values = [m for _, m, _ in self.per_seed]
        bounds = {b for _, _, b in self.per_seed}
        stat = Stat(values)
        if bounds == {"="}:
            return stat.mean, stat.std, "="
        if bounds <= {"=", ">", ">="}:
            return stat.mean, None, ">" if bounds == {">"} else ">="
        if bounds <= {"=", "<="}:
            return stat.mean, None, "<="
        return stat.mean, None, "mixed"

    def fmt(self) -> str:
        mean, std, bound = self.summary()
        if mean is None:
            return "n/a"
        reached = sum(1 for _, _, b in self.per_seed if b != ">")
        n = len(self.per_seed)
        if bound == "=":
            return f"{mean:.2f}×" + (f" ± {std:.2f}" if std is not None else "")
        if bound == ">":
            return f"> {mean:.2f}× (not reached)"
        if bound == ">=":
            return f"≥ {mean:.2f}× ({reached}/{n} reached)"
        if bound == "<=":
            return f"≤ {mean:.2f}×"
        return "mixed bounds (see CSV)"


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

    def metric(self, key: str) -> Stat:
        return Stat([r.metrics[key] for r in self.runs])

    @property
    def utility_change(self) -> Stat:
        return Stat([r.metrics["victim/acc_defended"] - r.metrics["victim/acc"] for r in self.runs])

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


def _group_key(run: Run) -> tuple:
    return (run.identity["data"], run.attack_label, run.identity["label_mode"], run.setting)


def build_rows(runs: list[Run]) -> tuple[list[Row], list[tuple[str, str]]]:
    """Aggregate runs into rows (seeds merged) and derive the comparisons. Returns (rows, duplicate problems)."""
    assign_labels(runs)
    problems: list[tuple[str, str]] = []
    cells: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.source):
        key = (*_group_key(run), run.budget, run.defense_label)
        if run.seed in cells[key]:
            problems.append((run.source, f"duplicate of {cells[key][run.seed].source} (same settings and seed "
                                         f"{run.seed}); skipped"))
            continue
        cells[key][run.seed] = run
    rows = [Row(k[0], k[1], k[2], k[3], k[4], k[5], sorted(v.values(), key=lambda r: r.seed))
            for k, v in cells.items()]

    # the seed's most complete curve per (group, defense): its largest-budget run
    longest: dict[tuple, dict[int, Run]] = defaultdict(dict)
    for row in rows:
        for run in row.runs:
            slot = longest[(*_group_key(run), row.defense)]
            if run.seed not in slot or run.budget > slot[run.seed].budget:
                slot[run.seed] = run
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


# ----------------------------------------------------------------------------------------------------- outputs

def table_columns(rows: list[Row]) -> list[str]:
    cols = ["data", "attack", "labels", "budget", "rank", "defense", "seeds", "attacker acc", "fidelity",
            "acc drop vs none", "query multiplier", "victim acc", "utility Δacc", "KL(y‖y')", "KL(y'‖y)", "L1",
            "top-1 changed"]
    if any(r.setting for r in rows):
        cols.insert(3, "setting")
    return cols


def table_cells(row: Row, with_setting: bool) -> list[str]:
    cells = [row.data, row.attack, row.label_mode, str(row.budget), str(row.rank), row.defense,
             str(len(row.runs)), row.metric("surrogate/acc").fmt(), row.metric("surrogate/fidelity").fmt(),
             "—" if row.baseline else (row.acc_drop.fmt(signed=True) if row.acc_drop.n else row.note or "n/a"),
             "— (baseline)" if row.baseline else row.multiplier.fmt(),
             row.metric("victim/acc").fmt(), row.utility_change.fmt(signed=True), row.metric("defense/kl_nats").fmt(),
             row.metric("defense/kl_nats_rev").fmt(), row.metric("defense/l1").fmt(),
             row.metric("defense/top1_changed").fmt()]
    if with_setting:
        cells.insert(3, row.setting or "-")
    return cells


def to_markdown(rows: list[Row]) -> str:
    cols = table_columns(rows)
    with_setting = "setting" in cols
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row, with_setting)) + " |")
    return "\n".join(lines) + "\n"


CSV_METRICS = (("surrogate/acc", "attacker_acc"), ("surrogate/fidelity", "fidelity"), ("victim/acc", "victim_acc"),
               ("victim/acc_defended", "victim_acc_defended"), ("defense/kl_nats", "kl_nats"),
               ("defense/kl_nats_rev", "kl_nats_rev"), ("defense/l1", "l1"),
               ("defense/top1_changed", "top1_changed"), ("queries", "queries"))


def write_csv(rows: list[Row], path: Path) -> None:
    header = ["data", "attack", "label_mode", "setting", "budget", "rank", "defense", "n_seeds", "seeds"]
    for _, name in CSV_METRICS:
        header += [f"{name}_mean", f"{name}_std"]
    header += ["acc_drop_mean", "acc_drop_std", "acc_drop_pairs", "query_multiplier_mean", "query_multiplier_std",
               "query_multiplier_bound", "query_multiplier_per_seed", "note", "sources"]

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            line = [row.data, row.attack, row.label_mode, row.setting, row.budget, row.rank, row.defense,
                    len(row.runs), " ".join(map(str, row.seeds))]
            for key, _ in CSV_METRICS:
                s = row.metric(key)
                line += [num(s.mean), num(s.std)]
            mean, std, bound = row.multiplier.summary() if not row.baseline else (1.0, None, "=")
            per_seed = " ".join(f"s{s}:{b if b != '=' else ''}{m:.4g}" for s, m, b in row.multiplier.per_seed)
            line += [num(0.0 if row.baseline else row.acc_drop.mean), num(row.acc_drop.std),
                     len(row.runs) if row.baseline else row.acc_drop.n, num(mean), num(std), bound, per_seed,
                     row.note, " ".join(r.source for r in row.runs)]
            writer.writerow(line)


def print_table(rows: list[Row], problems: list[tuple[str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # cells and folder names are plain Text: a `[/...]` in a path or label is not rich markup (and cannot crash)
    console = Console(highlight=False, width=None if os.isatty(1) else 320)
    cols = table_columns(rows)
    with_setting = "setting" in cols
    table = Table(title=title, title_justify="left")
    for col in cols:
        table.add_column(col, justify="right" if col in ("budget", "rank", "seeds") else "left")
    previous = None
    for row in rows:
        cell = (row.data, row.attack, row.label_mode, row.setting, row.budget)
        if previous is not None and cell != previous:
            table.add_section()
        previous = cell
        style = "bold" if row.rank == 1 and len(rows) > 1 else None
        table.add_row(*map(Text, table_cells(row, with_setting)), style=style)
    console.print(table)
    if problems:
        console.print(f"[yellow]skipped {len(problems)} run(s), not averaged in:[/]")
        for source, reason in problems:
            console.print(Text(f"  {source}: {reason}"))


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
        path = _figure_path(out_dir, "curves", data, label_mode, setting)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


#: readable part of a figure's file name; the settings it leaves out are told apart by a hash
_FIGURE_PREFIX_CHARS = 60


def _figure_path(out_dir: Path, kind: str, data: str, label_mode: str, setting: str) -> Path:
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
        path = _figure_path(out_dir, "utility", data, label_mode, setting)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_markdown(rows: list[Row], problems: list[tuple[str, str]], path: Path, sources: list[str],
                   plots: list[Path]) -> None:
    n_runs = sum(len(r.runs) for r in rows)
    parts = [f"# stealbench leaderboard\n",
             f"{n_runs} runs from {', '.join(sources)}; {len(rows)} rows (seeds aggregated: mean ± sample std).",
             "Ranked within each data / attack / label mode / budget by attacker accuracy (lower = stronger "
             "defense). Acc drop: undefended minus defended attacker accuracy at equal budget, paired by seed. "
             "Query multiplier: queries the attacker needs against the defense to reach the accuracy the "
             "undefended attack reached at this budget, over the queries it needed without the defense (first "
             "crossing on each seed's largest-budget curve, interpolated in log(queries)); \"> X\" means the "
             "defended curve never got there (X = its last checkpoint / budget). Utility Δacc: "
             "defended minus clean victim accuracy for benign users; KL in nats per query.\n",
             to_markdown(rows)]
    if plots:
        parts.append("\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    if problems:
        parts.append(f"\nSkipped {len(problems)} run(s), not averaged in:\n")
        parts += [f"- `{s}`: {reason}" for s, reason in problems]
        parts.append("")
    path.write_text("\n".join(parts))


def log_to_wandb(rows: list[Row], project_path: str | None, plots: list[Path]) -> str:
    import wandb

    entity, _, project = (project_path or "stealbench").rpartition("/")
    cols = table_columns(rows)
    with_setting = "setting" in cols
    run = wandb.init(project=project or "stealbench", entity=entity or None, job_type="leaderboard",
                     name="leaderboard", reinit="finish_previous")
    table = wandb.Table(columns=cols, data=[table_cells(r, with_setting) for r in rows])
    payload: dict[str, Any] = {"leaderboard": table}
    for p in plots:
        payload[f"plots/{p.stem}"] = wandb.Image(str(p))
    run.log(payload)
    where = run.url or run.dir
    run.finish()
    return str(where)


def build(paths: list[str] | None = None, wandb_path: str | None = None, tags: list[str] | None = None,
          ) -> tuple[list[Row], list[tuple[str, str]]]:
    if wandb_path:
        runs, problems = load_wandb(wandb_path, tags)
    else:
        runs, problems = load_folders(paths or [])
    rows, dupes = build_rows(runs) if runs else ([], [])
    return rows, problems + dupes


def leaderboard_command(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="stealbench leaderboard",
        description="Rank and compare finished runs: terminal table, leaderboard.md, leaderboard.csv and plots. "
                    "Reads run folders (results.json) under DIR, or a W&B project with --wandb.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="run folders or folders holding run folders")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="read the runs of this W&B project instead (online)")
    parser.add_argument("--tag", action="append", default=None,
                        help="with --wandb: only runs with this tag (e.g. grid:paper_mnist; repeatable)")
    # --output_dir as in `fit` and `grid`; --out (the older name) and dashed spellings stay as hidden aliases
    parser.add_argument("--output_dir", default="leaderboard", metavar="DIR",
                        help="folder for leaderboard.md/.csv and plots")
    parser.add_argument("--out", dest="output_dir", default="leaderboard", help=argparse.SUPPRESS)
    parser.add_option("--no_plots", action="store_true", help="skip the PNG plots")
    parser.add_option("--log_wandb", nargs="?", const="", default=None, metavar="ENTITY/PROJECT",
                        help="log the table (and plots) to W&B as a wandb.Table, in a run of job type "
                             "`leaderboard` (default project: --wandb's, else stealbench)")
    parser.add_argument("--claims", default=None, metavar="NAME|FILE",
                        help="also check the claims of a reproduction (e.g. lee2018) or of a grid file with a "
                             "`claims:` section against these runs; writes claims.md")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give run folders (DIR ...) or --wandb ENTITY/PROJECT")
    out = Path(args.output_dir)
    check_folder("output_dir", out)  # before reading runs: fail in milliseconds, write nothing
    claims = None
    if args.claims is not None:
        from .claims_spec import load_claims_spec

        claims = load_claims_spec(args.claims)
    rows, problems = build(args.dirs, args.wandb, args.tag)
    sources = [f"W&B {args.wandb}"] if args.wandb else list(args.dirs)
    if not rows:
        print_table([], problems, "stealbench leaderboard")
        raise StealbenchError(f"no complete runs found in {', '.join(sources)}")
    out.mkdir(parents=True, exist_ok=True)
    plots = [] if args.no_plots else plot_curves(rows, out) + plot_utility(rows, out)
    write_markdown(rows, problems, out / "leaderboard.md", sources, plots)
    write_csv(rows, out / "leaderboard.csv")
    print_table(rows, problems, f"stealbench leaderboard ({sum(len(r.runs) for r in rows)} runs)")
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}"
          + (f" and {len(plots)} plots ({', '.join(p.name for p in plots)})" if plots else ""))
    if claims is not None:
        from .report import check_claims

        check_claims([run for row in rows for run in row.runs], claims, out, sources)
        print(f"wrote {out / 'claims.md'}")
    if args.log_wandb is not None:
        print(f"W&B: {log_to_wandb(rows, args.log_wandb or args.wandb, plots)}")
    return 0


__all__ = ["MalformedRun", "Row", "Run", "build", "build_rows", "leaderboard_command", "load_folders",
           "load_run_folder", "queries_to_reach", "run_from_wandb", "validate_results"]
