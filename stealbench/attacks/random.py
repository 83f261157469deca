"""Natural samples: query random images of the attacker pool, train on the answers."""

from __future__ import annotations

import torch
from torch import nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext


class RandomSamples(Attack):
    """Natural samples (Knockoff random): query pool images in random order; retrain at each checkpoint."""

    def __init__(self, checkpoints: list[int] | None = None, num_checkpoints: int = 5, epochs: int = 10,
                 retrain_from_scratch: bool = True) -> None:
        """
        Args:
            checkpoints: query counts at which to train and evaluate the surrogate (default: a doubling
                sequence ending at the budget, `num_checkpoints` long).
            num_checkpoints: length of the default doubling sequence.
            epochs: training epochs at each checkpoint.
            retrain_from_scratch: re-initialise the surrogate at each checkpoint (independent curve points on
                nested transfer sets); False fine-tunes the previous surrogate (a warm-started curve).
        """
        if epochs < 1:
            raise ConfigError(f"attack.epochs must be >= 1, got {epochs}")
        if num_checkpoints < 1:
            raise ConfigError(f"attack.num_checkpoints must be >= 1, got {num_checkpoints}")
        self.checkpoints = list(checkpoints) if checkpoints else None
        self.num_checkpoints = num_checkpoints
        self.epochs = epochs
        self.retrain_from_scratch = retrain_from_scratch

    def schedule(self, budget: int) -> list[int]:
        if self.checkpoints:
            return sorted(set(self.checkpoints))
        points = {max(1, budget >> k) for k in range(self.num_checkpoints)}
        return sorted(points)

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        if budget > pool_size:
            raise ConfigError(
                f"budget {budget} exceeds the attacker pool ({pool_size} images); the random attack queries each "
                "pool image at most once. Lower --budget or enlarge the pool (--data.pool_fraction)."
            )
        bad = [c for c in self.schedule(budget) if c < 1 or c > budget]
        if bad:
            raise ConfigError(f"attack.checkpoints {bad} lie outside [1, budget={budget}]")

    def run(self, ctx: AttackContext) -> nn.Module:
        order = torch.randperm(len(ctx.pool_x), generator=ctx.generator)
        xs, targets = [], []
        model = ctx.new_surrogate()
        for round_idx, point in enumerate(self.schedule(ctx.oracle.budget), start=1):
            new = order[ctx.oracle.used:point]
            x_new = ctx.pool_x[new]
            xs.append(x_new)
            targets.append(ctx.to_targets(ctx.oracle.query(x_new)))
            if self.retrain_from_scratch:
                model = ctx.new_surrogate()
            model = ctx.train(model, torch.cat(xs), torch.cat(targets), self.epochs)
            ctx.checkpoint(model, round_idx, self.retrain_from_scratch)
        return model


@hookimpl
def register_attacks(register):
    register("random", RandomSamples)
