"""The Attack interface and the context an attack runs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class OracleHandle(Protocol):
    """What an attack sees of the oracle: queries in, released probabilities out, and the counters."""

    budget: int
    input_shape: tuple[int, int, int]
    num_classes: int

    @property
    def used(self) -> int: ...

    @property
    def remaining(self) -> int: ...

    def query(self, x: Tensor) -> Tensor: ...


class QueryCounter:
    """The counters of :class:`OracleHandle`, shared by the oracle and the attacker's handle on it: subclasses set
    `budget` and keep `_used` up to date."""

    budget: int
    _used: int = 0

    @property
    def used(self) -> int:
        return self._used

    @property
    def remaining(self) -> int:
        return self.budget - self._used


class NetworkFactory:
    """`ctx.new_network(build, name)`: `build()`'s network with initial weights seeded from (`base`, `name`), on
    `device`. In a run `base` is the attack role's seed, so the weights derive from (run seed, "attack", name): the
    same name gives the same initial weights in every run of that seed, whatever else the attack drew before."""

    def __init__(self, base: int, device: torch.device) -> None:
        self.base, self.device = int(base), torch.device(device)

    def __call__(self, build: Callable[[], nn.Module], name: str) -> nn.Module:
        from ..errors import ConfigError
        from ..seeding import named_seed, seeded_globals

        if not isinstance(name, str) or not name:
            raise ConfigError(f"ctx.new_network(build, name): name must be a non-empty string, got {name!r}")
        with seeded_globals(named_seed(self.base, name)):
            net = build()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"ctx.new_network({name!r}): build() returned a {type(net).__name__}, not an nn.Module")
        return net.to(self.device)


def _default_optimizer(device: torch.device):
    from ..steps import make_optimizer_factory

    return make_optimizer_factory("default", device)


@dataclass
class AttackContext:
    """Everything an attack may use, and nothing more: what a real attacker holds.

    In a run, the attack executes in the attacker's own process: `oracle` sends its queries to the defender's
    process, `checkpoint` sends the surrogate's weights there to be evaluated, and no object of the defender's
    (victim, defense, evaluation set, the pool's ground truth) exists in this process.
    """

    oracle: OracleHandle
    pool_x: Tensor  # unlabelled attacker images, pixel space [0, 1]
    num_classes: int
    input_shape: tuple[int, int, int]
    generator: torch.Generator  # seeded from (run seed, "attack"); use it for every random choice
    device: torch.device
    #: a freshly initialised surrogate network (each call's initial weights derive from the run seed)
    new_surrogate: Callable[[], nn.Module]
    #: train(model, x, targets, epochs) -> model; targets are probability vectors (see `to_targets`)
    train: Callable[[nn.Module, Tensor, Tensor, int], nn.Module]
    #: released answers -> training targets, per the run's label mode (soft probabilities or one-hot)
    to_targets: Callable[[Tensor], Tensor]
    #: checkpoint(model, round, retrained_from_scratch): evaluate the surrogate at the current query count (on the
    #: defender's side, with the weights sent over); rounds count from 1
    checkpoint: Callable[[nn.Module, int, bool], None]
    #: seed_set(per_class) -> (images, labels): a class-balanced labelled seed set chosen by the framework from the
    #: pool (Papernot et al. assume the attacker holds a few labelled images per class). The labels are the
    #: attacker's own knowledge and cost no queries; at most one size per run, recorded in results.json
    seed_set: Callable[[int], tuple[Tensor, Tensor]] | None = None
    #: labels of the pool, only when it comes from another data set (``--pool_data``): the attacker's own data
    #: with its own classes (not the victim's task). None for the victim task's pool: no ground truth for it
    pool_labels: Tensor | None = None
    #: print a progress message
    log: Callable[[str], None] = print
    #: new_network(build, name) -> build()'s network on `device`, initial weights seeded from (run seed, "attack",
    #: name): generators and other auxiliary networks (None here: the framework fills it in, see NetworkFactory)
    new_network: Callable[[Callable[[], nn.Module], str], nn.Module] | None = None
    #: optimizer(params, *, steps=None, **overrides) -> steps.StepOptimizer: step-level training under the run's
    #: surrogate recipe, device and precision; overrides: optimizer, lr, weight_decay, momentum, nesterov, schedule
    optimizer: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.new_network is None:
            self.new_network = NetworkFactory(self.generator.initial_seed(), self.device)
        if self.optimizer is None:
            self.optimizer = _default_optimizer(self.device)


class Attack:
    """Base class. Subclasses implement :meth:`run`; typed ``__init__`` arguments become CLI/YAML options.

    :meth:`run` queries ``ctx.oracle`` (never more than ``ctx.oracle.remaining`` images at a time), trains the
    surrogate with ``ctx.train`` and calls ``ctx.checkpoint`` whenever the surrogate should be evaluated (the
    points of the budget curve). It returns the final surrogate.
    """

    #: False: the attack never looks at the attacker pool (a data-free attack). The attacker's process then gets
    #: an empty ``ctx.pool_x`` and results.json records ``pool: {"needed": false, ...}``
    needs_pool: bool = True

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        """Raise ConfigError when the attack cannot run with these settings (checked before any training)."""

    def report(self) -> dict[str, float]:
        """The attack's own figures after `run` (e.g. a query breakdown), recorded in results.json's
        ``extra_metrics`` under ``attack/`` (``{"queries/student": 640}`` becomes ``attack/queries/student``).
        Finite numbers only (others are dropped); ``label_mode/...`` is the label mode's and refused."""
        return {}

    def run(self, ctx: AttackContext) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement run(ctx)")

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def class_balanced_indices(labels: Tensor, per_class: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """`per_class` random indices of each class (vectorised: one sort, no per-class loop)."""
    perm = torch.randperm(len(labels), generator=generator)
    order = torch.argsort(labels[perm], stable=True)
    idx = perm[order]
    sorted_labels = labels[idx]
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[sorted_labels]
    return idx[rank < per_class]
