"""One stealing experiment, phase by phase: data -> victim -> defense -> oracle -> attack rounds -> results.

Plain Python orchestration; each training phase gets a fresh Lightning Trainer (see training.fit).
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import seed_everything
from torchmetrics.functional.classification import multiclass_accuracy

from . import __version__, console
from .attacks.base import Attack, AttackContext
from .config import SurrogateConfig, VictimConfig, WandbConfig
from .data.base import ImageDataset
from .defenses.base import Defense, DefenseSetup
from .errors import ConfigError, StealbenchError
from .label_modes import LabelOptions, make_label_mode
from .metrics import DefenseStats
from .models.factory import build_net
from .oracle import Oracle, check_probabilities
from .pools import load_pool
from .plugins import get_catalog
from .results import RESULTS_FILE, SCHEMA_VERSION, plot_curve, write_json_atomic
from .tracking import Tracker
from .training import TrainSettings, fit, predict_probs, resolve_device
from .victim import obtain_victim


@dataclass
class Experiment:
    """A fully specified run. `keys` are the registry keys of data/defense/attack (the run's identity)."""

    data: ImageDataset
    defense: Defense
    attack: Attack
    keys: dict[str, str]
    budget: int = 3200
    label_mode: str = "soft"
    seed: int = 0
    victim: VictimConfig = field(default_factory=VictimConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs"
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, as written to config.yaml
    config_yaml: str = ""
    progress_bar: bool = False
    #: options of the defense-aware label modes (invert, smooth)
    label_options: LabelOptions = field(default_factory=LabelOptions)
    #: attacker pool from another data set (None: the victim data set's own pool split); see pools.py
    pool_data: ImageDataset | None = None

    def identity(self) -> dict[str, Any]:
        ident = {"data": self.keys["data"], "defense": self.keys["defense"], "attack": self.keys["attack"],
                 "victim_arch": self.victim.arch, "surrogate_arch": self.surrogate.arch, "budget": self.budget,
                 "seed": self.seed, "label_mode": self.label_mode}
        if self.pool_data is not None:
            ident["pool_data"] = self.keys.get("pool_data", type(self.pool_data).__name__.lower())
        return ident

    def default_name(self) -> str:
        i = self.identity()
        return f"{i['data']}_{i['defense']}_{i['attack']}_{i['label_mode']}_b{i['budget']}_s{i['seed']}"


def _accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    return float(multiclass_accuracy(probs.argmax(-1), labels, num_classes=num_classes, average="micro"))


def run_experiment(exp: Experiment) -> dict[str, Any]:
    """Run `exp` and write its folder; returns the results dict. Raises StealbenchError on bad input."""
    started = time.perf_counter()
    catalog = get_catalog()
    data = exp.data
    label_mode = make_label_mode(exp.label_mode, data.num_classes, exp.label_options)  # answers -> targets
    if exp.budget < 1:
        raise ConfigError(f"budget must be a positive number of queries, got {exp.budget}")

    splits = data.splits()
    if exp.pool_data is not None:  # the attacker's pool from another data set (never the evaluation images)
        pool_x, pool_y = load_pool(exp.pool_data, data, splits.eval_x)
        splits = replace(splits, pool_x=pool_x, pool_y=pool_y)
    exp.attack.validate(budget=label_mode.effective_budget(exp.budget), num_classes=data.num_classes,
                        pool_size=len(splits.pool_y))
    for role, arch in (("victim", exp.victim.arch), ("surrogate", exp.surrogate.arch)):
        try:
            catalog.architectures.get(arch)
        except StealbenchError as exc:
            raise ConfigError(f"--{role}.arch: {exc}") from exc

    name = exp.name or exp.default_name()
    run_dir = Path(exp.output_dir) / (name if exp.name else f"{name}_{datetime.now():%Y%m%d-%H%M%S}")
    if (run_dir / RESULTS_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a completed run; choose another --name or --output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(exp.config_yaml or json.dumps(exp.config, indent=2))

    tracker = None
    try:
        tracker = Tracker(exp.wandb, run_dir, run_dir.name, {**exp.identity(), "plugins": catalog.versions(),
                                                              "config": exp.config})
        results = _run_phases(exp, catalog, splits, label_mode, run_dir, tracker, started)
    except BaseException as exc:
        # The folder must not look complete: no results.json, an error.txt saying what happened.
        (run_dir / "error.txt").write_text("".join(traceback.format_exception(exc)))
        if tracker is not None:
            tracker.abort()
        raise
    return results


def _run_phases(exp: Experiment, catalog, splits, label_mode, run_dir: Path, tracker: Tracker,
                started: float) -> dict[str, Any]:
    data = exp.data
    device = resolve_device(exp.trainer)
    seed_everything(exp.seed, workers=True, verbose=False)
    console.header({
        "data": f"{exp.keys['data']}  (victim train {len(splits.victim_y)}, attacker pool {len(splits.pool_y)}, "
                f"eval {len(splits.eval_y)})",
        "victim": f"{exp.victim.arch}, {exp.victim.epochs} epochs",
        "surrogate": exp.surrogate.arch,
        "defense": f"{exp.keys['defense']}  {_params(exp.defense)}",
        "attack": f"{exp.keys['attack']}  {_params(exp.attack)}",
        "budget": f"{exp.budget} queries, label mode {exp.label_mode}",
        "seed": str(exp.seed),
        "device": str(device),
        "output": str(run_dir),
        "W&B": tracker.mode,
    })

    def make_net(arch: str):
        return build_net(arch, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean,
                         std=data.std, catalog=catalog)

    logger = tracker.lightning_logger()
    victim_settings = TrainSettings(batch_size=exp.victim.batch_size, lr=exp.victim.lr,
                                    weight_decay=exp.victim.weight_decay, trainer=exp.trainer,
                                    progress_bar=exp.progress_bar, logger=logger)
    victim_seed = exp.seed if exp.victim.seed is None else exp.victim.seed
    data_identity = {"dataset": f"{type(data).__module__}.{type(data).__qualname__}", **data.config()}
    t0 = time.perf_counter()
    victim = obtain_victim(lambda: make_net(exp.victim.arch), exp.victim, data_identity, victim_seed,
                           splits.victim_x, splits.victim_y, data.num_classes, victim_settings)
    verb = {"trained": "trained", "cache": "loaded from cache", "checkpoint": "loaded from checkpoint"}[victim.origin]
    console.info(f"victim {verb}" + (f" ({victim.path})" if victim.path else "")
                 + f" in {time.perf_counter() - t0:.1f}s")
    # Re-seed: the attack must not depend on whether the victim was trained or loaded (same run, same numbers).
    seed_everything(exp.seed, workers=True, verbose=False)
    victim_net = victim.net.to(device).eval()
    for p in victim_net.parameters():
        p.requires_grad_(False)

    generator = torch.Generator().manual_seed(exp.seed)
    surrogate_settings = TrainSettings(batch_size=exp.surrogate.batch_size, lr=exp.surrogate.lr,
                                       weight_decay=exp.surrogate.weight_decay, trainer=exp.trainer,
                                       progress_bar=exp.progress_bar, logger=logger)

    def train_model(net, x, targets, epochs, log_name="defense"):
        return fit(net, x, targets, epochs, surrogate_settings,
                   seed=int(torch.randint(2**31, (1,), generator=generator)), log_name=log_name)

    exp.defense.setup(DefenseSetup(
        victim=victim_net, train_x=splits.victim_x, train_y=splits.victim_y, num_classes=data.num_classes,
        input_shape=data.input_shape, device=device, generator=generator, train_model=train_model,
        load_dataset=lambda key, **options: _load_other(catalog, key, **options),
    ))

    # Utility for benign users, on the evaluation set, with a copy of the defense (query history stays clean).
    clean_eval = predict_probs(victim_net, splits.eval_x, device)
    released_eval = _defend(copy.deepcopy(exp.defense), splits.eval_x, clean_eval, device, exp.keys["defense"])
    stats = DefenseStats()
    stats.update(clean_eval, released_eval)
    victim_pred = clean_eval.argmax(-1)
    metrics: dict[str, Any] = {
        "victim/acc": _accuracy(clean_eval, splits.eval_y, data.num_classes),
        "victim/acc_defended": _accuracy(released_eval, splits.eval_y, data.num_classes),
        **stats.compute("defense/"),
    }
    console.info(f"victim acc {metrics['victim/acc']:.4f}, defended {metrics['victim/acc_defended']:.4f}, "
                 f"top-1 changed {metrics['defense/top1_changed']:.4f}")

    oracle = Oracle(victim_net, exp.defense, budget=exp.budget, input_shape=data.input_shape,
                    num_classes=data.num_classes, device=device, defense_name=exp.keys["defense"])
    curve: list[dict[str, Any]] = []

    def checkpoint(model, round_idx: int, retrained_from_scratch: bool) -> None:
        probs = predict_probs(model, splits.eval_x, device)
        point = {"queries": oracle.used, "round": round_idx,
                 "surrogate/acc": _accuracy(probs, splits.eval_y, data.num_classes),
                 "surrogate/fidelity": _accuracy(probs, victim_pred, data.num_classes),
                 "retrained_from_scratch": bool(retrained_from_scratch)}
        curve.append(point)
        console.round_line(point, exp.budget)
        tracker.log_point({k: v for k, v in point.items() if k != "retrained_from_scratch"})

    ctx = AttackContext(
        oracle=label_mode.wrap_oracle(oracle), pool_x=splits.pool_x, pool_y=splits.pool_y,
        num_classes=data.num_classes,
        input_shape=data.input_shape, generator=generator, device=device,
        new_surrogate=lambda: make_net(exp.surrogate.arch),
        train=lambda model, x, targets, epochs: train_model(model, x, targets, epochs, "surrogate"),
        to_targets=label_mode, checkpoint=checkpoint, log=console.info,
    )
    exp.attack.run(ctx)
    if not curve:
        raise StealbenchError(f"attack {exp.keys['attack']!r} finished without evaluating the surrogate "
                              "(it never called ctx.checkpoint)")

    final = curve[-1]
    metrics.update({"surrogate/acc": final["surrogate/acc"], "surrogate/fidelity": final["surrogate/fidelity"],
                    "queries": oracle.used})
    extras = {**oracle.stats(), **{f"defense/{k}": v for k, v in exp.defense.report().items()}, **label_mode.report()}
    elapsed = time.perf_counter() - started
    results = {
        "schema": SCHEMA_VERSION,
        "status": "complete",
        "identity": exp.identity(),
        "metrics": metrics,
        "extra_metrics": extras,
        "curve": curve,
        "splits": splits.sizes(),
        "victim": {"origin": victim.origin, "path": victim.path},
        "config": exp.config,
        "versions": {"stealbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "plugins": catalog.versions()},
        "wall_seconds": round(elapsed, 2),
        "command": " ".join(sys.argv),
    }
    title = (f"{exp.keys['data']}: {exp.keys['attack']} vs {exp.keys['defense']} "
             f"({exp.label_mode} labels, seed {exp.seed})")
    plot_curve(run_dir / "curve.png", curve, title, metrics["victim/acc"])
    write_json_atomic(run_dir / RESULTS_FILE, results)
    console.metrics_table({**metrics, **extras}, title=f"results ({elapsed:.1f}s)")
    console.info(tracker.finish({**metrics, **extras}, files=[run_dir / RESULTS_FILE]))
    console.info(f"results: {run_dir / RESULTS_FILE}")
    return results


def _params(component: Defense | Attack) -> str:
    cfg = {k: v for k, v in component.config().items() if not isinstance(v, (torch.Tensor, torch.nn.Module))}
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


@torch.no_grad()
def _defend(defense: Defense, x: torch.Tensor, clean: torch.Tensor, device: torch.device, name: str,
            batch_size: int = 1024) -> torch.Tensor:
    defense = defense.to(device).eval()
    parts = []
    for xb, pb in zip(x.split(batch_size), clean.split(batch_size)):
        pb = pb.to(device)
        released = defense(xb.to(device), pb)
        check_probabilities(released, pb, name)
        parts.append(released.cpu())
    return torch.cat(parts)


def _load_other(catalog, key: str, **options):
    """Another registered data set's training part; `options` go to its constructor (e.g. root=...)."""
    try:
        other = catalog.datasets.get(key)(**options)
    except TypeError as exc:
        raise ConfigError(f"data set {key!r} does not take options {sorted(options)}: {exc}") from exc
    s = other.splits()
    return s.victim_x, s.victim_y


__all__ = ["Experiment", "run_experiment"]
