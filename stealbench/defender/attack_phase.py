"""The defender's side of the attack phase: the attack named, built and validated in the attacker's process
(never here), then served by the referee and scored from the evaluator's outputs.

`resolve_attack` runs before the victim trains, so a bad attack option or a refused validate() ends the run before
any training; `attack_phase` runs once the oracle stands.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from .. import console
from ..attacker.choice import AttackChoice
from ..attacker.launch import AttackerLink
from ..attacker.process import AttackerSpec
from ..attacks.base import Attack
from ..errors import StealbenchError
from ..evaluator.client import EvaluatorFailed, SurrogateEvaluator
from ..seeding import role_generator, role_seed, seeded_globals
from .attacker_compute import compute_record
from .referee import AttackerFailed, Referee
from .referee import stop as stop_attacker


def accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    return float(multiclass_accuracy(probs.argmax(-1), labels, num_classes=num_classes, average="micro"))


def resolve_attack(attack: AttackChoice | Attack, key: str, link: AttackerLink, limits: dict[str, int]
                   ) -> dict[str, Any]:
    """What the run records of its attack: {key, source (the registering plugin, or None), plugin, params, config}. A choice (name and options) is
    built and validated in the attacker's process; an Attack object (a library caller built it, in its own
    process) was validated by run_experiment and is sent as it is."""
    if isinstance(attack, Attack):
        return {"key": key, "source": None, "plugin": {}, "params": params(attack), "config": {},
                "needs_pool": bool(getattr(attack, "needs_pool", True))}
    return link.resolve(attack, limits)


def params(component: Any) -> str:
    cfg = {k: v for k, v in component.config().items() if not isinstance(v, (torch.Tensor, torch.nn.Module))}
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def attack_phase(exp, splits, surrogate_settings, label_mode, device: torch.device, oracle, defended, logger,
                 tracker, attack_name: str, oracle_name: str, link: AttackerLink,
                 evaluator: SurrogateEvaluator, needs_pool: bool = True) -> tuple[Referee, dict[str, Any]]:
    """The attack, in the attacker's own process; this side answers its queries and scores its checkpoints from
    the outputs of the evaluator's process."""
    data = exp.data

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        try:
            probs = evaluator.outputs(state)
        except EvaluatorFailed as exc:  # the run ends: a surrogate that cannot be evaluated gives no measurement
            raise AttackerFailed(f"attack {attack_name}: the surrogate ({exp.surrogate.arch}) cannot be evaluated: "
                                 f"{exc}", exc.details) from None
        if not torch.isfinite(probs).all():  # argmax of NaN is class 0: an accuracy, but not a measurement
            raise AttackerFailed(f"attack {attack_name} broke rule [finite-surrogate]: its checkpoint gives NaN or "
                                 "infinite outputs on the evaluation set")
        return {"surrogate/acc": accuracy(probs, splits.eval_y, data.num_classes),
                "surrogate/fidelity": accuracy(probs, defended.victim_pred, data.num_classes)}

    def on_point(point: dict[str, Any]) -> None:
        console.round_line(point, exp.budget)
        tracker.log_point({k: v for k, v in point.items() if k != "retrained_from_scratch"})

    def on_log(metrics: dict[str, float], step: int | None) -> None:
        if logger is not None:
            logger.log_metrics(metrics, step)

    # an attack that needs no pool (data-free) gets none: nothing of the pool reaches its process
    pool = slice(None) if needs_pool else slice(0, 0)
    labels = splits.pool_labels[pool] if splits.pool_labels is not None else None
    referee = Referee(
        oracle=oracle, pool_x=splits.pool_x[pool], pool_truth=splits.pool_y[pool], pool_labels=labels,
        evaluate=evaluate,
        seed_generator=role_generator(exp.seed, "seed_set"), on_point=on_point, on_log=on_log,
        say=console.attack_line, attack_name=attack_name, defense_name=oracle_name,
        answer_timeout=exp.timeouts.answer,
    )
    spec = AttackerSpec(
        # None: the attacker's process runs the attack it built from the choice (resolve_attack)
        attack=exp.attack if isinstance(exp.attack, Attack) else None, attack_key=exp.keys["attack"],
        label_mode=label_mode.as_data(), seed=exp.seed, budget=exp.budget,  # a name and options: built over there
        num_classes=data.num_classes, input_shape=tuple(data.input_shape), mean=tuple(data.mean),
        std=tuple(data.std), surrogate=exp.surrogate,
        train_settings=surrogate_settings,  # no logger: the attacker's process relays its logs
        device=str(device),
    )
    started = time.perf_counter()
    process, conn = link.run(spec)
    try:
        with seeded_globals(role_seed(exp.seed, "oracle")):  # randomised defenses answer from this stream
            report = referee.serve(conn, process, timeout=exp.timeouts.attack)
    except BaseException:
        stop_attacker(process, conn, timeout=1.0)  # interrupted or failed: no reason to wait for a clean exit
        raise
    # read before it stops: the kernel's account of the attacker's processes, not a figure the attacker sends
    referee.compute = compute_record(getattr(process, "pid", None), time.perf_counter() - started,
                                     None if exp.oracle.url else _answering_seconds(oracle))
    stop_attacker(process, conn)
    if not referee.curve:
        raise StealbenchError(f"attack {exp.keys['attack']!r} finished without evaluating the surrogate "
                              "(it never called ctx.checkpoint)")
    return referee, report


def _answering_seconds(oracle) -> float:
    """The local oracle's time answering so far (victim forward passes and the defense, for all traffic
    answered, benign users' mixed in); a remote endpoint's is its own (None in the record)."""
    price = oracle.price(None)
    return float(price.get("victim_seconds", 0.0)) + float(price.get("defense_seconds", 0.0))


__all__ = ["accuracy", "attack_phase", "params", "resolve_attack"]
