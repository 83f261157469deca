"""Targeted JBDA variants (Juuti et al. 2019, PRADA): JB-top-k and T-RND.

Both keep JBDA's rounds, seed set, reservoir sampling and query accounting (see jbda.py) and change only the
augmentation step: instead of stepping along the gradient of the oracle's label, each point steps *towards*
other classes: x' = clip(x + lambda * sign(d F_t(x) / dx), 0, 1) for target classes t != the oracle's label.
`direction` and `sign_period` do not apply (the step is always +lambda, towards the target), so setting them is
an error rather than a silently ignored option.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from .base import AttackContext
from .jbda import JBDA, jacobian_step


def topk_other_classes(model: nn.Module, x: Tensor, labels: Tensor, k: int, batch_size: int = 1024) -> Tensor:
    """(N, k): the surrogate's k most probable classes other than `labels`, most probable first."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    with torch.no_grad():
        for xb, yb in zip(x.split(batch_size), labels.split(batch_size)):
            logits = model(xb.to(device)).float()
            logits = logits.scatter(1, yb.to(device).view(-1, 1), float("-inf"))
            parts.append(logits.topk(k, dim=1).indices.cpu())
    model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, k, dtype=torch.long)


def random_other_classes(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random class != label for every entry."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def reject_sign_options(name: str, direction: str, sign_period: int | None) -> None:
    """The targeted variants always step +lambda towards their target: JBDA's sign options would be ignored."""
    if direction != "towards":
        raise ConfigError(f"attack.direction must be 'towards' for {name} (its steps always go towards the target "
                          f"class), got {direction!r}")
    if sign_period is not None:
        raise ConfigError(f"attack.sign_period must be null for {name} (its step sign never flips), "
                          f"got {sign_period!r}")


class JBTopK(JBDA):
    """JB-top-k (Juuti et al. 2019): each point spawns k targeted steps, towards the surrogate's top-k other classes."""

    def __init__(self, k: int = 3, **kwargs) -> None:
        """
        Args:
            k: targeted steps per point, towards the surrogate's k most probable classes other than the oracle's
                label (the set grows by a factor k + 1 per round).
            **kwargs: the options of `jbda` (seed set, lam, rounds, epochs_per_round, reservoir, ...).
        """
        super().__init__(**kwargs)
        reject_sign_options("jbda-topk", self.direction, self.sign_period)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"attack.k must be an integer >= 1 (targeted steps per point), got {k!r}")
        self.k = k

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        super().validate(budget=budget, num_classes=num_classes, pool_size=pool_size)
        if self.k > num_classes - 1:
            raise ConfigError(f"attack.k must be <= number of classes - 1 = {num_classes - 1}, got {self.k}")

    def new_per_source(self, num_classes: int) -> int:
        return self.k

    def augment(self, model: nn.Module, x: Tensor, labels: Tensor, round_idx: int, ctx: AttackContext) -> Tensor:
        targets = topk_other_classes(model, x, labels, self.k)  # (N, k)
        # one batch of N*k points, grouped by source point: x_0 -> t_0,1..t_0,k, x_1 -> ...
        return jacobian_step(model, x.repeat_interleave(self.k, dim=0), targets.flatten(), self.lam,
                             grad_of=self.grad_of)


class TRND(JBDA):
    """T-RND (Juuti et al. 2019): JBDA whose steps go towards a uniformly random class other than the label."""

    def __init__(self, **kwargs) -> None:
        """
        Args:
            **kwargs: the options of `jbda` (seed set, lam, rounds, epochs_per_round, reservoir, ...), except
                `direction` and `sign_period`.
        """
        super().__init__(**kwargs)
        reject_sign_options("t-rnd", self.direction, self.sign_period)

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        super().validate(budget=budget, num_classes=num_classes, pool_size=pool_size)
        if num_classes < 2:
            raise ConfigError("t-rnd needs at least 2 classes")

    def augment(self, model: nn.Module, x: Tensor, labels: Tensor, round_idx: int, ctx: AttackContext) -> Tensor:
        targets = random_other_classes(labels, ctx.num_classes, ctx.generator)
        return jacobian_step(model, x, targets, self.lam, grad_of=self.grad_of)


@hookimpl
def register_attacks(register):
    register("jbda-topk", JBTopK)
    register("t-rnd", TRND)
