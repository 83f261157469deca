"""The defender's side of a run up to the first query: the victim (trained, or loaded from the cache or a
checkpoint) and the defense's setup, as `stealbench fit` does them (runner.py) and `stealbench serve` serves them
(:func:`serving_side`: the same checks, splits, victim and defense as `fit` with the same options, without the
attacker's side)."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from .. import console
from ..data.base import Splits
from ..defenses.base import DefenseSetup
from ..errors import ConfigError, DefenseOutputError, StealbenchError
from ..models.factory import build_net
from ..pools import check_outliers_disjoint
from ..seeding import RoleCounter, role_generator, role_seed, seeded_globals
from ..signals import PhaseTimeout, deadline
from ..training import TrainSettings, fit, predict_probs
from ..victim import obtain_victim
from .attack_phase import accuracy as _accuracy
from .guard import guarded_setup, weights_checksum


def defense_who(exp: Any, catalog) -> str:
    """'KEY' (plugin SOURCE): how errors name the run's defense (an attack is named by its own side)."""
    key = exp.keys.get("defense", "?")
    try:
        return f"{key!r} (plugin {catalog.defenses.source(key)})"
    except StealbenchError:
        return repr(key)


@dataclass
class Defended:
    """The defender's side after setup: the frozen victim, its clean predictions and the utility figures."""

    victim: Any  # victim.VictimResult
    victim_net: torch.nn.Module
    victim_pred: torch.Tensor  # the undefended argmax on the evaluation set (the fidelity reference)
    metrics: dict[str, Any]
    make_net: Any  # arch -> a fresh net for this data set


def defender_phase(exp: Any, catalog, splits: Splits, settings: dict[str, TrainSettings],
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
    with seeded_globals(victim_seed), timed(exp.timeouts.victim, "the victim phase", "victim"):
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

    # The defense gets its own copy of the victim: the clean answers (the oracle's, the metrics') come from the
    # framework's copy, and a setup() that changes the weights it was handed is a broken rule, not a quiet win
    defense_victim = copy.deepcopy(victim_net)
    before = weights_checksum(defense_victim)
    with seeded_globals(role_seed(exp.seed, "defense")), timed(
            exp.timeouts.defense_setup, f"defense {defense_who(exp, catalog)} broke rule [timeout]: its setup()",
            "defense_setup", DefenseOutputError):
        guarded_setup(exp.defense, DefenseSetup(
            victim=defense_victim, train_x=splits.victim_x, train_y=splits.victim_y, num_classes=data.num_classes,
            input_shape=data.input_shape, device=device, generator=role_generator(exp.seed, "defense"),
            train_model=train_model, holdout_x=splits.holdout_x, holdout_y=splits.holdout_y,
            load_dataset=lambda key, part="train", **options: load_other(catalog, key, part, splits.pool_x,
                                                                      exp.keys.get("pool_data"), **options),
        ), defense_who(exp, catalog))
    if weights_checksum(defense_victim) != before:
        raise DefenseOutputError(f"defense {defense_who(exp, catalog)} broke rule [victim-unchanged]: its "
                                 "setup() changed the victim's weights; train a copy (copy.deepcopy(victim)) instead")

    # The clean answers on the evaluation set (the fidelity reference), from the framework's own victim. Benign
    # users' answers come from the oracle, mixed into the attacker's traffic (defender/benign.py, _utility)
    clean_eval = predict_probs(victim_net, splits.eval_x, device)
    metrics: dict[str, Any] = {"victim/acc": _accuracy(clean_eval, splits.eval_y, data.num_classes)}
    console.info(f"victim acc {metrics['victim/acc']:.4f}")
    return Defended(victim, victim_net, clean_eval.argmax(-1), metrics, make_net)


@contextmanager
def timed(seconds: float | None, what: str, option: str, error: type[StealbenchError] = StealbenchError):
    """The block under a deadline; past it, `error` saying what took too long and which option sets the limit."""
    try:
        with deadline(seconds):
            yield
    except PhaseTimeout:
        raise error(f"{what} took longer than {seconds:g}s (timeouts.{option})") from None


def load_other(catalog, key: str, part: str, pool_x: torch.Tensor, pool_key: str | None, **options):
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


def serving_side(exp: Any) -> tuple[Splits, Defended, torch.device]:
    """The defender's phases of a `fit` run alone, for serving the victim: the same checks, splits (the run seed's:
    the attacker's pool never trained it), victim (trained or from the cache) and defense setup as `fit` with
    these options, without the attacker's side. (splits, the defended victim, the device it is on)."""
    from ..devices import check_accelerator
    from ..distributed import check_trainer_options
    from ..plugins import get_catalog
    from ..training import resolve_device
    from .guard import check_defense_type

    check_accelerator(exp.trainer)
    catalog = get_catalog()
    check_defense_type(exp.defense, defense_who(exp, catalog))
    check_trainer_options(exp.trainer)
    data = exp.data
    data.follow_run_seed(exp.seed)
    splits = data.splits()
    for role in ("victim", "surrogate"):
        try:
            catalog.architectures.get(getattr(exp, role).arch)
        except StealbenchError as exc:
            raise ConfigError(f"--{role}.arch: {exc}") from exc
    settings = {role: TrainSettings.from_config(getattr(exp, role), role, data, trainer=exp.trainer,
                                                progress_bar=exp.progress_bar) for role in ("victim", "surrogate")}
    device = resolve_device(exp.trainer)
    return splits, defender_phase(exp, catalog, splits, settings, device, None), device


__all__ = ["Defended", "defender_phase", "defense_who", "load_other", "serving_side", "timed"]
