"""Finished runs as the analysis reads them: results.json of run folders, or W&B runs, validated.

Every run is validated first; failed, partial or malformed runs become problems (listed, skipped, never averaged in).
Never imports Lightning or torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import StealbenchError
from ..results import CURVE_KEYS, METRIC_KEYS, PRICE_KEYS, RESULTS_FILE

IDENTITY_KEYS = ("data", "defense", "attack", "victim_arch", "surrogate_arch", "budget", "seed", "label_mode")
BASELINE = "none"


class MalformedRun(StealbenchError):
    """A run that cannot enter a leaderboard (failed, partial, unreadable, or missing keys)."""


@dataclass
class Run:
    source: str
    identity: dict[str, Any]
    metrics: dict[str, float]
    curve: list[dict[str, Any]]
    config: dict[str, Any]
    defense_label: str = ""
    attack_label: str = ""
    label_mode_label: str = ""
    setting: str = ""
    #: results.json's `sealed`: "os-sandbox", "memory-only", or None (a run from before the field existed)
    sealed: str | None = None
    #: results.json's `price` figures (`defense/cost_ratio`, `defense/state_size`) that the run recorded; a run
    #: from before the section existed, or with nothing timed, has none
    price: dict[str, float] = field(default_factory=dict)

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
    # the contract of a run: no more queries than its budget (a record that says otherwise is not ranked)
    over = [q for q in [metrics["queries"], *(p["queries"] for p in points)] if q > identity["budget"]]
    if over:
        raise MalformedRun(f"breaks the run contract: {max(over):g} queries exceed its budget of "
                           f"{identity['budget']}")
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    sealed = payload.get("sealed") if isinstance(payload.get("sealed"), str) else None
    return Run(source, identity, {k: float(metrics[k]) for k in METRIC_KEYS}, points, config, sealed=sealed,
               price=_price(payload.get("price")))


def _price(price: Any) -> dict[str, float]:
    """The `price` section (optional: runs from before it existed have none): each of PRICE_KEYS a finite number
    >= 0 or null; anything else is a malformed run."""
    if price is None:
        return {}
    if not isinstance(price, dict):
        raise MalformedRun(f"`price` is a {type(price).__name__}, not a mapping")
    out = {}
    for key in PRICE_KEYS:
        value = price.get(key)
        if value is None:
            continue
        if not _finite(value) or value < 0:
            raise MalformedRun(f"price {key} is {value!r}, not a finite number >= 0 (or null)")
        out[key] = float(value)
    return out


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
               "curve": curve, "config": config.get("config") or {}, "sealed": config.get("sealed"),
               "price": {k: wrun.summary.get(k) for k in PRICE_KEYS}}
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


__all__ = ["BASELINE", "IDENTITY_KEYS", "MalformedRun", "Run", "find_run_folders", "load_folders", "load_run_folder",
           "load_wandb", "run_from_wandb", "validate_results"]
