"""One stealing experiment, phase by phase: data -> victim -> defense -> oracle -> attack rounds -> results.

Plain Python orchestration; each training phase gets a fresh Lightning Trainer (see training.fit). The defender's
phases run here; the attack runs in its own process (``stealbench.attacker``), joined to this one only by the
oracle's requests and the surrogate checkpoints (``stealbench.defender.referee``). Every random choice derives
from the run seed and its role (``stealbench.seeding``), so runs that differ only in the defense share the
attacker's luck.
"""

from __future__ import annotations

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

from . import __version__, console, distributed
from .attacker import sandbox as attacker_sandbox
from .attacker.label_choice import LabelModeChoice, LabelOptions, mode_label
from .attacker.choice import AttackChoice
from .attacker.launch import AttackerLink, take_spare
from .attacks.base import Attack
from .config import OracleConfig, SurrogateConfig, Timeouts, VictimConfig, WandbConfig, redact_argv
from .data.base import ImageDataset, Splits
from .defender.accounts import check_accounts
from .defender.cost import PRICE_KEYS, state_size
from .defender.guard import check_defense_type, checked_report
from .defender.attack_phase import accuracy as _accuracy
from .defender.attack_phase import attack_phase, params as _params, resolve_attack
from .defender.oracle import Oracle
from .defender.referee import Referee
from .defender.schema import attack_metrics
from .defender.victim_phase import Defended, defender_phase, defense_who
from .defenses.base import Defense
from .devices import check_accelerator
from .errors import ConfigError, StealbenchError
from .evaluator.client import SurrogateEvaluator
from .metrics import DefenseStats
from .plugins import get_catalog
from .pools import load_pool
from .reproducibility import process_record, run_record
from .results import RESULTS_FILE, SCHEMA_VERSION, plot_curve, write_json_atomic
from .rundir import open_run_dir, record_failure
from .seeding import ROLES, role_generator, role_seed, seeded_globals
from .tracking import Tracker
from .training import TrainSettings, resolve_device
from .victim import VictimResult, default_cache_dir


@dataclass
class Experiment:
    """A fully specified run. `keys` are the registry keys of data/defense/attack (the run's identity).

    `attack`: the attack by name and options (what `stealbench fit` gives: it is built only in the attacker's
    process), or an Attack a library caller built itself."""

    data: ImageDataset
    defense: Defense
    attack: AttackChoice | Attack
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
    #: options of the label mode (`--label_options.k 4`), checked against the mode's own Options on the attacker's
    #: side: the defender knows label modes by name only (attacker/label_choice.py)
    label_options: LabelOptions = field(default_factory=LabelOptions)
    #: attacker pool from another data set (None: the victim data set's own pool split); see pools.py
    pool_data: ImageDataset | None = None
    #: seconds per phase before the run ends as failed (a plugin that never returns); see config.Timeouts
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: where the attacker's process runs: "auto" (bubblewrap where it works, else memory-only), "bwrap", "off"
    sandbox: str = "auto"
    #: a remote oracle (--oracle.url): the attack queries that V2 endpoint instead of the local victim + defense
    oracle: OracleConfig = field(default_factory=OracleConfig)

    def identity(self) -> dict[str, Any]:
        ident = {"data": self.keys["data"], "defense": self.keys["defense"], "attack": self.keys["attack"],
                 "victim_arch": self.victim.arch, "surrogate_arch": self.surrogate.arch, "budget": self.budget,
                 "seed": self.seed, "label_mode": mode_label(self.label_mode, self.label_options)}
        if self.label_options:  # the mode's variant: its key and options, beside the label above
            ident["label_mode_key"] = self.label_mode
            ident["label_options"] = dict(self.label_options)
        if self.pool_data is not None:
            ident["pool_data"] = self.keys.get("pool_data", type(self.pool_data).__name__.lower())
        if self.oracle.quantize is not None:  # an 8-bit channel is another game: never mixed with exact pixels
            ident["oracle_quantize"] = self.oracle.quantize
        if self.oracle.accounts > 1:  # k accounts against a stateful defense is another game
            ident["oracle_accounts"] = self.oracle.accounts
            ident["oracle_account_split"] = self.oracle.account_split
        if self.oracle.benign_state != "shared":
            ident["oracle_benign_state"] = self.oracle.benign_state
        if self.oracle.url:  # the endpoint's own defense is unknown here: the run names the endpoint instead
            ident["defense"] = "endpoint"
            ident["endpoint"] = self.oracle.url
        return ident

    def default_name(self) -> str:
        i = self.identity()
        return f"{i['data']}_{i['defense']}_{i['attack']}_{i['label_mode']}_b{i['budget']}_s{i['seed']}"


def run_experiment(exp: Experiment) -> dict[str, Any]:
    """Run `exp` and write its folder; returns the results dict. Raises StealbenchError on bad input."""
    started = time.perf_counter()
    check_accelerator(exp.trainer)  # before any work: a missing GPU is a config error, not a late traceback
    sandbox = attacker_sandbox.resolve(exp.sandbox, console.info)  # --sandbox bwrap without bwrap: fails now
    catalog = get_catalog()
    check_defense_type(exp.defense, _who(exp, catalog, "defense"))
    if not isinstance(exp.attack, (Attack, AttackChoice)):
        raise ConfigError(f"attack {exp.keys.get('attack', '?')!r} is a {type(exp.attack).__name__}, not a "
                          "stealbench Attack")
    data = exp.data
    label_mode = LabelModeChoice.checked(exp.label_mode, exp.label_options)  # built on the attacker's side only
    if exp.budget < 1:
        raise ConfigError(f"budget must be a positive number of queries, got {exp.budget}")
    check_accounts(exp.oracle.accounts, exp.oracle.account_split, exp.budget, exp.oracle.benign_state)
    distributed.check_trainer_options(exp.trainer)  # fsdp, several nodes: refused before anything trains

    data.follow_run_seed(exp.seed)  # before the splits are drawn: a null --data.split_seed is the run's seed
    splits = data.splits()
    if exp.pool_data is not None:  # the attacker's pool from another data set (never the evaluation images)
        pool_x, pool_y = load_pool(exp.pool_data, data, splits.eval_x)
        # the attacker's own data set: its labels are the attacker's knowledge (Knockoff's adversary has them)
        splits = replace(splits, pool_x=pool_x, pool_y=pool_y, pool_labels=pool_y)
    limits = {"budget": exp.budget, "num_classes": data.num_classes, "pool_size": len(splits.pool_y)}
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
            results = _run_phases(exp, catalog, splits, settings, label_mode, run_dir, tracker, started, sandbox,
                                  limits)
        except BaseException as exc:
            # The folder must not look complete: no results.json, an error.txt saying what happened (with the
            # attacker's traceback when the attack failed in its own process)
            record_failure(run_dir, exc)
            if tracker is not None:
                tracker.abort()
            raise
    return results


def _run_phases(exp: Experiment, catalog, splits: Splits, settings: dict[str, TrainSettings],
                label_mode: LabelModeChoice, run_dir: Path, tracker: Tracker, started: float, sandbox: str,
                limits: dict[str, int]) -> dict[str, Any]:
    device = resolve_device(exp.trainer)
    # the attacker's process starts now (a sandboxed one imports torch meanwhile) and builds the label mode and the
    # attack from their names and options, the attack validated against the run's limits: refused before the victim
    # trains, never built here. The budget the attack is told is the mode's word (in images); the oracle counts
    # every real query against exp.budget whatever it says
    hide = _hidden_from_attacker(exp)
    # the process that checked `fit`'s attack options (attack_args.check_attack), if it was started as this one
    # would be: it saves starting a second one
    link = (take_spare(sandbox, hide, str(device), exp.timeouts.attack_setup)
            or AttackerLink(sandbox, hide, str(device), timeout=exp.timeouts.attack_setup).start())
    try:
        mode = link.label_mode(label_mode, exp.data.num_classes, exp.budget)
        limits = {**limits, "budget": mode["effective_budget"]}
        if isinstance(exp.attack, Attack):  # the caller's own object: validated where it was built, as ever
            exp.attack.validate(**limits)
        attack = resolve_attack(exp.attack, exp.keys["attack"], link, limits)
    except BaseException:
        link.close()
        raise
    attack_name = f"{attack['key']!r} (plugin {attack['source']})" if attack["source"] else repr(attack["key"])
    console.header({
        "data": f"{exp.keys['data']}  (victim train {len(splits.victim_y)}, defender holdout {len(splits.holdout_y)}, "
                f"attacker pool {len(splits.pool_y)}, eval {len(splits.eval_y)})",
        "victim": f"{exp.victim.arch}, {exp.victim.epochs} epochs, recipe {exp.victim.recipe}",
        "surrogate": f"{exp.surrogate.arch}, recipe {exp.surrogate.recipe}"
                     + (", pretrained" if exp.surrogate.pretrained else ""),
        "defense": f"that of the endpoint {exp.oracle.url}" if exp.oracle.url
                   else f"{exp.keys['defense']}  {_params(exp.defense)}",
        "attack": f"{attack['key']}  {attack['params']}",
        "budget": f"{exp.budget} queries, label mode {exp.label_mode}",
        "seed": str(exp.seed),
        "device": str(device),
        "output": str(run_dir),
        "W&B": tracker.mode,
        "attacker": "sealed in an OS sandbox (bubblewrap)" if sandbox == "bwrap" else "sealed in memory only",
    })
    logger = tracker.lightning_logger()
    # the surrogate's code runs only in its evaluator's process (the evaluation images and nothing else): it
    # builds the architecture while the victim trains
    evaluator = SurrogateEvaluator(sandbox, _hidden_from_attacker(exp), str(device))
    oracle = None
    try:
        evaluator.start().prepare(exp.surrogate.arch, num_classes=exp.data.num_classes, input_shape=exp.data.input_shape,
                          mean=exp.data.mean, std=exp.data.std, eval_x=splits.eval_x)
        if exp.oracle.url:
            defended, oracle = _endpoint_phase(exp, splits)
        else:
            defended = defender_phase(exp, catalog, splits, settings, device, logger)
        evaluator.wait_ready()  # a broken surrogate architecture is named here, not by the attack
        if not exp.oracle.url:
            oracle = Oracle(defended.victim_net, exp.defense, budget=exp.budget, input_shape=exp.data.input_shape,
                            num_classes=exp.data.num_classes, device=device,
                            defense_name=_who(exp, catalog, "defense"), benign_x=splits.eval_x,
                            benign_generator=role_generator(exp.seed, "evaluation"), quantize=exp.oracle.quantize,
                            accounts=exp.oracle.accounts, account_split=exp.oracle.account_split,
                            benign_state=exp.oracle.benign_state)
        oracle_name = f"the endpoint {exp.oracle.url}" if exp.oracle.url else _who(exp, catalog, "defense")
        referee, report = attack_phase(exp, splits, settings["surrogate"], label_mode, device, oracle, defended,
                                       logger, tracker, attack_name, oracle_name, link, evaluator,
                                       needs_pool=attack.get("needs_pool") is not False)
        if not exp.oracle.url:  # an endpoint's benign users are its own: their figures come from the referee's
            defended.metrics.update(_utility(exp, splits, defended, oracle))
    finally:
        evaluator.close()
        if hasattr(oracle, "close"):  # a remote oracle's HTTP connections
            oracle.close()
        link.close()  # a no-op after the attack; else the waiting attacker ends now
    return _write_results(exp, catalog, splits, settings, run_dir, tracker, started, defended, oracle, referee,
                          report, attacker_sandbox.SEALED[sandbox], {**(attack.get("plugin") or {}), **mode["plugin"]},
                          attack.get("needs_pool") is not False)


def _endpoint_phase(exp: Experiment, splits: Splits):
    """A remote run's defender side: the endpoint, and its answers on the evaluation set (the referee's own
    account) as the fidelity reference; `victim/acc` is the endpoint's accuracy as served (= acc_defended)."""
    from .serve.remote_oracle import connect

    oracle, reference = connect(exp.oracle, exp.budget, exp.data, splits.eval_x)
    acc = _accuracy(reference, splits.eval_y, exp.data.num_classes)
    console.info(f"endpoint acc on the evaluation set {acc:.4f} (released answers: the fidelity reference)")
    victim = VictimResult(net=None, origin="endpoint", path=exp.oracle.url)
    return Defended(victim, None, reference.argmax(-1), {"victim/acc": acc, "victim/acc_defended": acc}, None), oracle


def _write_results(exp: Experiment, catalog, splits: Splits, settings: dict[str, TrainSettings], run_dir: Path,
                   tracker: Tracker, started: float, defended: Defended, oracle: Oracle, referee: Referee,
                   report: dict[str, Any], sealed: str, attack_plugin: dict[str, str],
                   needs_pool: bool = True) -> dict[str, Any]:
    curve = referee.curve
    final = curve[-1]
    metrics = {**defended.metrics, "surrogate/acc": final["surrogate/acc"],
               "surrogate/fidelity": final["surrogate/fidelity"], "queries": oracle.used}
    seed_set = referee.seed_set_record
    # each source under its own prefix: measured figures (oracle/, label_mode/ recovery, seed_set/), the defense's
    # own report (defense/report/, checked), the attacker's label-mode figures (attack/, schema-checked)
    extras = {**oracle.stats(), **oracle.recovery(), "seed_set/size": float(seed_set["size"] if seed_set else 0),
              **checked_report(exp.defense, _who(exp, catalog, "defense")), **attack_metrics(report.get("attack", {})),
              **attack_metrics(report["label_mode"]), **(oracle.accounts_summary() if not exp.oracle.url else {})}
    # the defense's price: serving time over the victim's, and what it keeps (timings vary: never among metrics)
    price = oracle.price(state_size(exp.defense, _who(exp, catalog, "defense")))
    elapsed = time.perf_counter() - started
    attacker_env = report.get("environment") if isinstance(report.get("environment"), dict) else None
    reproducibility = run_record(exp.trainer, resolve_device(exp.trainer), process_record(), attacker_env)
    results = {
        "schema": SCHEMA_VERSION,
        "status": "complete",
        #: "os-sandbox": the attacker ran under bubblewrap; "memory-only": in its own process, files and /proc open
        "sealed": sealed,
        "identity": exp.identity(),
        "metrics": metrics,
        "extra_metrics": extras,
        "price": price,
        "attacker_compute": referee.compute,
        "curve": curve,
        "splits": splits.sizes(),
        "pool": _pool_record(exp, splits, needs_pool),
        "seed_set": seed_set,
        "randomness": {"seed": exp.seed, "scheme": "sha256(seed/role[/index]) per role", "roles": list(ROLES)},
        "victim": {"origin": defended.victim.origin, "path": defended.victim.path,
                   "check_acc": defended.victim.check_acc, "near_chance": defended.victim.near_chance},
        "recipes": {role: s.resolved_recipe().as_dict() for role, s in settings.items()},
        "config": exp.config,
        "reproducibility": reproducibility,
        "versions": {"stealbench": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version(),
                     "plugins": {**catalog.versions(), **attack_plugin}},  # the attack's and mode's, from their side
        "wall_seconds": round(elapsed, 2),
        "command": " ".join(redact_argv(sys.argv)),
    }
    if exp.oracle.url:
        results["endpoint"] = oracle.record()
    elif oracle.accounts > 1 or oracle.benign_state != "shared":
        results["accounts"] = {"count": oracle.accounts, "split": oracle.account_split,
                               "benign_state": oracle.benign_state, "per_account": oracle.account_records(),
                               "benign": oracle.benign_record()}
    title = (f"{exp.keys['data']}: {exp.keys['attack']} vs {exp.keys['defense']} "
             f"({exp.label_mode} labels, seed {exp.seed})")
    plot_curve(run_dir / "curve.png", curve, title, metrics["victim/acc"])
    write_json_atomic(run_dir / RESULTS_FILE, results)
    shown = {**metrics, **{k: v for k, v in extras.items() if k not in metrics}}  # measured metrics win
    shown.update({k: price[k] for k in PRICE_KEYS if price[k] is not None})
    console.metrics_table(shown, title=f"results ({elapsed:.1f}s, {sealed})")
    # known only now: the attacker's side has ended (and loaded the attack's plugin, for W&B's plugin list)
    tracker.add_config({"reproducibility": reproducibility, "sealed": sealed,
                        "plugins": results["versions"]["plugins"]})
    console.info(console.escape(tracker.finish(shown, files=[run_dir / RESULTS_FILE])))
    compute = referee.compute or {}
    if compute.get("cpu_seconds") is not None:
        answering = compute.get("defender_answering_seconds")
        console.info(f"attacker compute: {compute['cpu_seconds']:.1f} CPU s over the attack phase's "
                     f"{compute['wall_seconds']:.1f} s" + ("" if answering is None else
                                                          f" (the defender answered for {answering:.1f} s of it)"))
    console.info(f"results: {console.escape(run_dir / RESULTS_FILE)}")
    return results


def _pool_record(exp: Experiment, splits: Splits, needed: bool) -> dict[str, Any]:
    """Whether the attack used the attacker pool: a data-free attack (``needs_pool = False``, as its own side
    reported it) got none of it."""
    return {"needed": needed, "sent_to_attacker": len(splits.pool_y) if needed else 0,
            "source": ("pool_data" if exp.pool_data is not None else "victim data set") if needed else "none"}


def _hidden_from_attacker(exp: Experiment) -> list[Path]:
    """The run's folders that a sandboxed attacker must not see: the victim cache (and its seal key), the run
    output folder and every data root; sandbox.secret_paths adds the user's caches and W&B's folders."""
    roots = [getattr(d, "root", None) for d in (exp.data, exp.pool_data) if d is not None]
    return attacker_sandbox.run_secret_paths(Path(exp.victim.cache_dir or default_cache_dir()),
                                             bool(exp.victim.cache), Path(exp.output_dir), roots)


def _who(exp: Experiment, catalog, option: str) -> str:
    """'KEY' (plugin SOURCE): how errors name a defense (an attack is named by its own side: resolve_attack)."""
    return {"defense": defense_who}[option](exp, catalog)


def _utility(exp: Experiment, splits: Splits, defended: Defended, oracle: Oracle) -> dict[str, float]:
    """Utility for benign users: the evaluation set as the defense answered it, mixed into the attacker's traffic
    on the same instance (what the attack left is answered now)."""
    with seeded_globals(role_seed(exp.seed, "evaluation")):
        clean, released, clean_log = oracle.benign_answers()
    stats = DefenseStats()  # KL from float64 log-probabilities of the logits: float32 softmax underflows
    stats.update(clean, released, clean_log)
    metrics = {"victim/acc_defended": _accuracy(released, splits.eval_y, exp.data.num_classes),
               **stats.compute("defense/")}
    console.info(f"benign users: victim acc defended {metrics['victim/acc_defended']:.4f}, top-1 changed "
                 f"{metrics['defense/top1_changed']:.4f} (answered among the attacker's queries)")
    return metrics


__all__ = ["Experiment", "run_experiment"]
