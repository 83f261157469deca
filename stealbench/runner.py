"""One stealing experiment, phase by phase: data -> victim -> defense -> oracle -> attack rounds -> results.

Plain Python orchestration; each training phase gets a fresh Lightning Trainer (see training.fit). The defender's
phases run here; the attack runs in its own process (``stealbench.attacker``), joined to this one only by the
oracle's requests and the surrogate checkpoints (``stealbench.defender.referee``). Every random choice derives
from the run seed and its role (``stealbench.seeding``), so runs that differ only in the defense share the
attacker's luck.
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning
import numpy
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from . import __version__, console, distributed
from .attacker.launch import start_attacker
from .attacker.process import AttackerSpec
from .attacks.base import Attack
from .config import SurrogateConfig, VictimConfig, WandbConfig
from .data.base import ImageDataset, Splits
from .defender.guard import guarded_answer
from .defender.oracle import Oracle
from .defender.referee import Referee
from .defender.referee import stop as stop_attacker
from .defenses.base import Defense, DefenseSetup
from .devices import check_accelerator
from .errors import ConfigError, StealbenchError
from .attacker.label_modes import LabelOptions, make_label_mode, mode_label
from .metrics import DefenseStats
from .models.factory import build_net
from .plugins import get_catalog
from .pools import check_outliers_disjoint, load_pool
from .reproducibility import process_record, run_record
from .results import RESULTS_FILE, SCHEMA_VERSION, plot_curve, write_json_atomic
from .rundir import open_run_dir, record_failure
from .seeding import ROLES, RoleCounter, role_generator, role_seed, seeded_globals
from .tracking import Tracker
from .training import TrainSettings, fit, predict_log_probs, predict_probs, resolve_device
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
    #: options of the label mode (`--label_options.k 4`), checked against the mode's own Options
    label_options: LabelOptions = field(default_factory=LabelOptions)
    #: attacker pool from another data set (None: the victim data set's own pool split); see pools.py
    pool_data: ImageDataset | None = None

    def identity(self) -> dict[str, Any]:
        ident = {"data": self.keys["data"], "defense": self.keys["defense"], "attack": self.keys["attack"],
                 "victim_arch": self.victim.arch, "surrogate_arch": self.surrogate.arch, "budget": self.budget,
                 "seed": self.seed, "label_mode": mode_label(self.label_mode, self.label_options)}
        if self.label_options:  # the mode's variant: its key and options, beside the label above
            ident["label_mode_key"] = self.label_mode
            ident["label_options"] = dict(self.label_options)
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
    check_accelerator(exp.trainer)  # before any work: a missing GPU is a config error, not a late traceback
    catalog = get_catalog()
    data = exp.data
    label_mode = make_label_mode(exp.label_mode, data.num_classes, exp.label_options)  # answers -> targets
    if exp.budget < 1:
        raise ConfigError(f"budget must be a positive number of queries, got {exp.budget}")
    distributed.check_trainer_options(exp.trainer)  # fsdp, several nodes: refused before anything trains

    data.follow_run_seed(exp.seed)  # before the splits are drawn: a null --data.split_seed is the run's seed
    splits = data.splits()
    if exp.pool_data is not None:  # the attacker's pool from another data set (never the evaluation images)
        pool_x, pool_y = load_pool(exp.pool_data, data, splits.eval_x)
        # the attacker's own data set: its labels are the attacker's knowledge (Knockoff's adversary has them)
        splits = replace(splits, pool_x=pool_x, pool_y=pool_y, pool_labels=pool_y)
    exp.attack.validate(budget=label_mode.effective_budget(exp.budget), num_classes=data.num_classes,
                        pool_size=len(splits.pool_y))
    for role, arch in (("victim", exp.victim.arch), ("surrogate", exp.surrogate.arch)):
        try:
            catalog.architectures.get(arch)
        except StealbenchError as exc:
            raise ConfigError(f"--{role}.arch: {exc}") from exc
    # how each role trains (recipe, --trainer options), resolved once: a misspelt recipe fails now, not after the
    # victim has trained; the defender's auxiliary models train like the surrogate
    settings = {role: TrainSettings.from_config(getattr(exp, role), role, data, trainer=exp.trainer,
                                                progress_bar=exp.progress_bar) for role in ("victim", "surrogate")}

    tracker = None
    with open_run_dir(exp.output_dir, exp.name, exp.default_name()) as run:  # validated, locked for the run
        run_dir = run.path
        try:
            (run_dir / "config.yaml").write_text(exp.config_yaml or json.dumps(exp.config, indent=2))
            tracker = Tracker(exp.wandb, run_dir, run_dir.name, {**exp.identity(), "plugins": catalog.versions(),
                                                                  "config": exp.config})
            results = _run_phases(exp, catalog, splits, settings, label_mode, run_dir, tracker, started)
        except BaseException as exc:
            # The folder must not look complete: no results.json, an error.txt saying what happened (with the
            # attacker's traceback when the attack failed in its own process)
            record_failure(run_dir, exc)
            if tracker is not None:
                tracker.abort()
            raise
    return results


def _run_phases(exp: Experiment, catalog, splits: Splits, settings: dict[str, TrainSettings], label_mode,
                run_dir: Path, tracker: Tracker, started: float) -> dict[str, Any]:
    device = resolve_device(exp.trainer)
    console.header({
        "data": f"{exp.keys['data']}  (victim train {len(splits.victim_y)}, defender holdout {len(splits.holdout_y)}, "
                f"attacker pool {len(splits.pool_y)}, eval {len(splits.eval_y)})",
        "victim": f"{exp.victim.arch}, {exp.victim.epochs} epochs, recipe {exp.victim.recipe}",
        "surrogate": f"{exp.surrogate.arch}, recipe {exp.surrogate.recipe}"
                     + (", pretrained" if exp.surrogate.pretrained else ""),
        "defense": f"{exp.keys['defense']}  {_params(exp.defense)}",
        "attack": f"{exp.keys['attack']}  {_params(exp.attack)}",
        "budget": f"{exp.budget} queries, label mode {exp.label_mode}",
        "seed": str(exp.seed),
        "device": str(device),
        "output": str(run_dir),
        "W&B": tracker.mode,
    })
    logger = tracker.lightning_logger()
    defended = _defender_phase(exp, catalog, splits, settings, device, logger)
    oracle = Oracle(defended.victim_net, exp.defense, budget=exp.budget, input_shape=exp.data.input_shape,
                    num_classes=exp.data.num_classes, device=device, defense_name=_who(exp, catalog, "defense"))
    referee, report = _attack_phase(exp, splits, settings["surrogate"], label_mode, device, oracle, defended, logger,
                                    tracker)
    return _write_results(exp, catalog, splits, settings, run_dir, tracker, started, defended, oracle, referee,
                          report)


@dataclass
class Defended:
    """The defender's side after setup: the frozen victim, its clean predictions and the utility figures."""

    victim: Any  # victim.VictimResult
    victim_net: torch.nn.Module
    victim_pred: torch.Tensor  # the undefended argmax on the evaluation set (the fidelity reference)
    metrics: dict[str, Any]
    make_net: Any  # arch -> a fresh net for this data set


def _defender_phase(exp: Experiment, catalog, splits: Splits, settings: dict[str, TrainSettings],
                    device: torch.device, logger) -> Defended:
    """Victim (trained or loaded), defense setup, utility on the evaluation set: all on the defender's side."""
    data = exp.data

    def make_net(arch: str, pretrained: bool = False):
        return build_net(arch, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean,
                         std=data.std, catalog=catalog, pretrained=pretrained)

    victim_settings = replace(settings["victim"], logger=logger)
    victim_seed = role_seed(exp.seed if exp.victim.seed is None else exp.victim.seed, "victim")
    data_identity = {"dataset": f"{type(data).__module__}.{type(data).__qualname__}", **data.config()}
    t0 = time.perf_counter()
    with seeded_globals(victim_seed):
        victim = obtain_victim(lambda: make_net(exp.victim.arch), exp.victim, data_identity, victim_seed,
                               splits.victim_x, splits.victim_y, data.num_classes, victim_settings,
                               check_x=splits.holdout_x, check_y=splits.holdout_y)
    verb = {"trained": "trained", "cache": "loaded from cache", "checkpoint": "loaded from checkpoint"}[victim.origin]
    console.info(f"victim {verb}" + (f" ({console.escape(victim.path)})" if victim.path else "")
                 + f" in {time.perf_counter() - t0:.1f}s")
    victim_net = victim.net.to(device).eval()
    for p in victim_net.parameters():
        p.requires_grad_(False)

    # the defender's auxiliary models (proxies, detectors) train like the attacker's surrogate
    defense_settings = replace(settings["surrogate"], logger=logger)
    train_seeds = RoleCounter(exp.seed, "defense")

    def train_model(net, x, targets, epochs, log_name="defense", loss=None):
        seed = train_seeds.next()
        with seeded_globals(seed):
            return fit(net, x, targets, epochs, defense_settings, seed=seed, log_name=log_name,
                       **({"loss": loss} if loss is not None else {}))

    with seeded_globals(role_seed(exp.seed, "defense")):
        exp.defense.setup(DefenseSetup(
            victim=victim_net, train_x=splits.victim_x, train_y=splits.victim_y, num_classes=data.num_classes,
            input_shape=data.input_shape, device=device, generator=role_generator(exp.seed, "defense"),
            train_model=train_model, holdout_x=splits.holdout_x, holdout_y=splits.holdout_y,
            load_dataset=lambda key, part="train", **options: _load_other(catalog, key, part, splits.pool_x,
                                                                       exp.keys.get("pool_data"), **options),
        ))

    # Utility for benign users, on the evaluation set, with a copy of the defense (query history stays clean).
    clean_eval = predict_probs(victim_net, splits.eval_x, device)
    with seeded_globals(role_seed(exp.seed, "evaluation")):
        released_eval = _defend(copy.deepcopy(exp.defense), splits.eval_x, clean_eval, device,
                                _who(exp, catalog, "defense"))
    stats = DefenseStats()  # KL from float64 log-probabilities of the logits: float32 softmax underflows
    stats.update(clean_eval, released_eval, predict_log_probs(victim_net, splits.eval_x, device))
    metrics: dict[str, Any] = {
        "victim/acc": _accuracy(clean_eval, splits.eval_y, data.num_classes),
        "victim/acc_defended": _accuracy(released_eval, splits.eval_y, data.num_classes),
        **stats.compute("defense/"),
    }
    console.info(f"victim acc {metrics['victim/acc']:.4f}, defended {metrics['victim/acc_defended']:.4f}, "
                 f"top-1 changed {metrics['defense/top1_changed']:.4f}")
    return Defended(victim, victim_net, clean_eval.argmax(-1), metrics, make_net)


def _attack_phase(exp: Experiment, splits: Splits, surrogate_settings: TrainSettings, label_mode,
                  device: torch.device, oracle: Oracle, defended: Defended, logger,
                  tracker: Tracker) -> tuple[Referee, dict[str, Any]]:
    """The attack, in the attacker's own process; this side answers its queries and evaluates its checkpoints."""
    data = exp.data

    def evaluate(net) -> dict[str, float]:
        probs = predict_probs(net, splits.eval_x, device)
        return {"surrogate/acc": _accuracy(probs, splits.eval_y, data.num_classes),
                "surrogate/fidelity": _accuracy(probs, defended.victim_pred, data.num_classes)}

    def on_point(point: dict[str, Any]) -> None:
        console.round_line(point, exp.budget)
        tracker.log_point({k: v for k, v in point.items() if k != "retrained_from_scratch"})

    def on_log(metrics: dict[str, float], step: int | None) -> None:
        if logger is not None:
            logger.log_metrics(metrics, step)

    referee = Referee(
        oracle=oracle, pool_x=splits.pool_x, pool_truth=splits.pool_y, pool_labels=splits.pool_labels,
        evaluate=evaluate, build_surrogate=lambda: defended.make_net(exp.surrogate.arch),  # weights come over
        seed_generator=role_generator(exp.seed, "seed_set"), on_point=on_point, on_log=on_log, say=console.attack_line,
    )
    spec = AttackerSpec(
        attack=exp.attack, attack_key=exp.keys["attack"], label_mode=label_mode, seed=exp.seed, budget=exp.budget,
        num_classes=data.num_classes, input_shape=tuple(data.input_shape), mean=tuple(data.mean),
        std=tuple(data.std), surrogate=exp.surrogate,
        train_settings=surrogate_settings,  # no logger: the attacker's process relays its logs
        device=str(device),
    )
    process, conn = start_attacker(spec)
    try:
        with seeded_globals(role_seed(exp.seed, "oracle")):  # randomised defenses answer from this stream
            report = referee.serve(conn, process)
    finally:
        stop_attacker(process, conn)
    if not referee.curve:
        raise StealbenchError(f"attack {exp.keys['attack']!r} finished without evaluating the surrogate "
                              "(it never called ctx.checkpoint)")
    return referee, report


def _write_results(exp: Experiment, catalog, splits: Splits, settings: dict[str, TrainSettings], run_dir: Path,
                   tracker: Tracker, started: float, defended: Defended, oracle: Oracle, referee: Referee,
                   report: dict[str, Any]) -> dict[str, Any]:
    curve = referee.curve
    final = curve[-1]
    metrics = {**defended.metrics, "surrogate/acc": final["surrogate/acc"],
               "surrogate/fidelity": final["surrogate/fidelity"], "queries": oracle.used}
    label_report = report.get("label_mode") if isinstance(report.get("label_mode"), dict) else {}
    extras = {**oracle.stats(), **oracle.recovery(), **{f"defense/{k}": v for k, v in exp.defense.report().items()},
              **{k: float(v) for k, v in label_report.items() if isinstance(v, (int, float))}}
    elapsed = time.perf_counter() - started
    attacker_env = report.get("environment") if isinstance(report.get("environment"), dict) else None
    reproducibility = run_record(exp.trainer, resolve_device(exp.trainer), process_record(), attacker_env)
    results = {
        "schema": SCHEMA_VERSION,
        "status": "complete",
        "identity": exp.identity(),
        "metrics": metrics,
        "extra_metrics": extras,
        "curve": curve,
        "splits": splits.sizes(),
        "seed_set": referee.seed_set_record,
        "randomness": {"seed": exp.seed, "scheme": "sha256(seed/role[/index]) per role", "roles": list(ROLES)},
        "victim": {"origin": defended.victim.origin, "path": defended.victim.path,
                   "check_acc": defended.victim.check_acc, "near_chance": defended.victim.near_chance},
        "recipes": {role: s.resolved_recipe().as_dict() for role, s in settings.items()},
        "config": exp.config,
        "reproducibility": reproducibility,
        "versions": {"stealbench": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version(), "plugins": catalog.versions()},
        "wall_seconds": round(elapsed, 2),
        "command": " ".join(sys.argv),
    }
    title = (f"{exp.keys['data']}: {exp.keys['attack']} vs {exp.keys['defense']} "
             f"({exp.label_mode} labels, seed {exp.seed})")
    plot_curve(run_dir / "curve.png", curve, title, metrics["victim/acc"])
    write_json_atomic(run_dir / RESULTS_FILE, results)
    console.metrics_table({**metrics, **extras}, title=f"results ({elapsed:.1f}s)")
    tracker.add_config({"reproducibility": reproducibility})  # known only now: the attacker's side has ended
    console.info(console.escape(tracker.finish({**metrics, **extras}, files=[run_dir / RESULTS_FILE])))
    console.info(f"results: {console.escape(run_dir / RESULTS_FILE)}")
    return results


def _who(exp: Experiment, catalog, option: str) -> str:
    """'KEY' (plugin SOURCE): how errors name a component."""
    key = exp.keys.get(option, "?")
    registry = {"defense": catalog.defenses, "attack": catalog.attacks}[option]
    try:
        return f"{key!r} (plugin {registry.source(key)})"
    except StealbenchError:
        return repr(key)


def _params(component: Defense | Attack) -> str:
    cfg = {k: v for k, v in component.config().items() if not isinstance(v, (torch.Tensor, torch.nn.Module))}
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


@torch.no_grad()
def _defend(defense: Defense, x: torch.Tensor, clean: torch.Tensor, device: torch.device, name: str,
            batch_size: int = 1024) -> torch.Tensor:
    defense = defense.to(device).eval()
    parts = [guarded_answer(defense, xb.to(device), pb.to(device), name).cpu()
             for xb, pb in zip(x.split(batch_size), clean.split(batch_size))]
    return torch.cat(parts)


def _load_other(catalog, key: str, part: str, pool_x: torch.Tensor, pool_key: str | None, **options):
    """Another registered data set's `train` or `test` part, for a defense; refused if it shares attacker-pool images.

    A defense must not train on the attacker's own data (e.g. an outlier set that is the attacker's pool).
    """
    if part not in ("train", "test"):
        raise ConfigError(f"load_dataset(part=...) takes 'train' or 'test', got {part!r}")
    try:
        other = catalog.datasets.get(key)(**options)
    except TypeError as exc:
        raise ConfigError(f"data set {key!r} does not take options {sorted(options)}: {exc}") from exc
    train_x, train_y, test_x, test_y = other.parts()
    x, y = (train_x, train_y) if part == "train" else (test_x, test_y)
    pool_name = f"--pool_data {pool_key}" if pool_key else "the victim data set's pool split"
    check_outliers_disjoint(x, pool_x, f"data set {key!r} ({part} part)", pool_name)
    return x, y


__all__ = ["Experiment", "run_experiment"]
