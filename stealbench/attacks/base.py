"""The Attack interface and the context an attack runs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # the oracle pulls in torchmetrics; `stealbench list` should not
    from ..oracle import Oracle


@dataclass
class AttackContext:
    """Everything an attack may use. It holds no reference to the victim: answers come only from `oracle`."""

    oracle: "Oracle"
    pool_x: Tensor  # unlabeled attacker data, pixel space [0, 1]
    #: ground truth of the pool, only for choosing a class-balanced seed set (Papernot et al. assume the attacker
    #: holds a few representative images per class); never train on it
    pool_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    generator: torch.Generator  # seeded; use it for every random choice
    device: torch.device
    #: a freshly initialised surrogate network
    new_surrogate: Callable[[], nn.Module]
    #: train(model, x, targets, epochs) -> model; targets are probability vectors (see `to_targets`)
    train: Callable[[nn.Module, Tensor, Tensor, int], nn.Module]
    #: released answers -> training targets, per the run's label mode (soft probabilities or one-hot)
    to_targets: Callable[[Tensor], Tensor]
    #: report(model, round, retrained_from_scratch): evaluate the surrogate at the current query count
    checkpoint: Callable[[nn.Module, int, bool], None]
    #: print a progress message
    log: Callable[[str], None] = print


class Attack:
    """Base class. Subclasses implement :meth:`run`; typed ``__init__`` arguments become CLI/YAML options.

    :meth:`run` queries ``ctx.oracle`` (never more than ``ctx.oracle.remaining`` images at a time), trains the
    surrogate with ``ctx.train`` and calls ``ctx.checkpoint`` whenever the surrogate should be evaluated (the
    points of the budget curve). It returns the final surrogate.
    """

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        """Raise ConfigError when the attack cannot run with these settings (checked before any training)."""

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
