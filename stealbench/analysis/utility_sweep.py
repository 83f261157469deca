"""A defense's cost to benign users over a grid of its parameters, computed directly from finished runs' victims.

Utility needs no attack: the victim a grid run trained (cached, path in its results.json) is reloaded, the run's
evaluation split rebuilt from the recorded data settings, and each parameter setting of the defense is applied to
the victim's answers on that split. This is far cheaper than one run per setting and measures the same figures as
a run's `victim/acc_defended` and `defense/*` (same split, same statistics, KL from float64 log-probabilities).

Only defenses that need no setup (no training, no holdout data) are swept this way, e.g. the reverse sigmoid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .claims_spec import SweepSpec
from ..errors import ConfigError
from ..metrics import DefenseStats
from ..results import RESULTS_FILE


def victims_of(run_folders: list[Path]) -> list[tuple[int, dict]]:
    """One finished run per distinct victim: [(seed, results)], in seed order."""
    seen: dict[str, tuple[int, dict]] = {}
    for folder in run_folders:
        try:
            payload = json.loads((folder / RESULTS_FILE).read_text())
        except (OSError, ValueError):
            continue
        if payload.get("status") != "complete":
            continue
        victim = payload.get("victim") or {}
        key = victim.get("path") or json.dumps(payload.get("config", {}).get("victim"), sort_keys=True)
        key = f"{payload['identity']['data']}|{key}"
        if key not in seen:
            seen[key] = (int(payload["identity"]["seed"]), payload)
    return sorted(seen.values(), key=lambda item: item[0])


def _load_victim(payload: dict, catalog):
    """(victim net, data set) of a finished run, from its recorded config and the victim cache."""
    from ..models.factory import build_net
    from ..victim import load_state

    identity, config = payload["identity"], payload.get("config") or {}
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    data = catalog.datasets.get(identity["data"])(**(data_cfg.get("init_args") or {}))
    data.follow_run_seed(int(identity["seed"]))  # the run's own split (a null split_seed followed its seed)
    path = (payload.get("victim") or {}).get("path")
    if not path or not Path(path).exists():
        raise ConfigError(f"the victim of {identity} is not on disk ({path}); rerun the grid (it is retrained and "
                          "cached) or keep the victim cache ($STEALBENCH_CACHE_DIR)")
    net = build_net(identity["victim_arch"], num_classes=data.num_classes, input_shape=data.input_shape,
                    mean=data.mean, std=data.std, catalog=catalog)
    net.load_state_dict(load_state(Path(path)))
    return net.eval(), data


@torch.no_grad()
def sweep_victim(payload: dict, spec: SweepSpec, catalog=None) -> list[dict[str, Any]]:
    """Per setting of `spec`: victim and defended accuracy, top-1 changes (all inputs, and inputs whose top
    probability exceeds 1/2), both KL directions and L1, on the run's evaluation split."""
    from ..plugins import get_catalog

    catalog = catalog or get_catalog()
    net, data = _load_victim(payload, catalog)
    splits = data.splits()
    # float64 log-softmax of the logits, as the runner's utility figures (not stealbench.training's helper: that
    # module imports Lightning, seconds a report-only rerun does not need)
    log_y = torch.cat([torch.log_softmax(net(xb).double(), -1) for xb in splits.eval_x.split(1024)])
    clean = log_y.exp().float()
    labels = splits.eval_y
    confident = log_y.exp().max(-1).values > 0.5
    acc = float((clean.argmax(-1) == labels).double().mean())
    out = []
    for setting in spec.settings():
        try:
            defense = catalog.defenses.get(spec.defense)(**setting)
        except TypeError as exc:
            raise ConfigError(f"utility sweep: defense {spec.defense!r} does not take {setting}: {exc}") from exc
        defense.eval()
        released = torch.cat([defense(xb, pb.clone()) for xb, pb in
                              zip(splits.eval_x.split(1024), clean.split(1024))])
        stats = DefenseStats()
        stats.update(clean, released, log_y)
        figures = stats.compute("")
        changed = clean.argmax(-1) != released.argmax(-1)
        acc_def = float((released.argmax(-1) == labels).double().mean())
        out.append({**setting, "acc": acc, "acc_defended": acc_def, "acc_change": acc_def - acc,
                    "top1_changed": float(changed.double().mean()),
                    "top1_changed_confident": float(changed[confident].double().mean()) if confident.any() else 0.0,
                    "confident_fraction": float(confident.double().mean()), **figures})
    return out


__all__ = ["sweep_victim", "victims_of"]
