"""ActiveThief (Pal et al., AAAI 2020): pool-based active learning over rounds.

An initial random set is queried; each round the surrogate is trained on everything queried so far, evaluated,
and picks the next batch from the unqueried pool: the most `uncertainty` (entropy of its prediction), a
`kcenter` core set (greedy farthest points from the queried set in the space of its softmax outputs), or
`uncertainty-kcenter` (k-center among the `candidates_factor` x batch most uncertain). `random` is the baseline.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext

STRATEGIES = ("random", "uncertainty", "kcenter", "uncertainty-kcenter")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([torch.softmax(model(xb.to(device)).float(), -1).cpu() for xb in x.split(batch_size)])


def entropy(probs: Tensor) -> Tensor:
    return -torch.special.xlogy(probs, probs).sum(-1)


def kcenter_greedy(candidates: Tensor, centers: Tensor, n: int, chunk: int = 4096) -> Tensor:
    """Indices of `n` candidates chosen greedily, each the farthest (L2) from the centers and earlier choices.

    Vectorised over candidates; the n choices are sequential by definition of the greedy core set.
    """
    n = min(n, len(candidates))
    if len(centers):
        min_dist = torch.cat([torch.cdist(c, centers).min(1).values for c in candidates.split(chunk)])
    else:
        min_dist = torch.full((len(candidates),), float("inf"))
    chosen = torch.empty(n, dtype=torch.long)
    for i in range(n):
        j = int(min_dist.argmax())
        chosen[i] = j
        min_dist = torch.minimum(min_dist, (candidates - candidates[j]).norm(dim=1))
        min_dist[j] = -1.0  # never again
    return chosen


class ActiveThief(Attack):
    """ActiveThief (Pal et al. 2020): rounds of active selection from the pool (uncertainty, k-center, or both)."""

    def __init__(self, strategy: Literal["random", "uncertainty", "kcenter", "uncertainty-kcenter"] = "kcenter",
                 initial: int | None = None, rounds: int = 5, epochs: int = 10, retrain_from_scratch: bool = True,
                 candidates_factor: int = 4) -> None:
        """
        Args:
            strategy: how each round's batch is chosen: random, uncertainty, kcenter or uncertainty-kcenter.
            initial: size of the initial random query set (default: budget / (rounds + 1)).
            rounds: selection rounds after the initial set; the rest of the budget is split evenly over them.
            epochs: surrogate training epochs per round.
            retrain_from_scratch: re-initialise the surrogate each round (else fine-tune it).
            candidates_factor: uncertainty-kcenter: k-center runs over the factor x batch most uncertain images.
        """
        checks = [
            (strategy in STRATEGIES, f"attack.strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}"),
            (initial is None or initial >= 1, f"attack.initial must be >= 1 or null, got {initial}"),
            (rounds >= 0, f"attack.rounds must be >= 0, got {rounds}"),
            (epochs >= 1, f"attack.epochs must be >= 1, got {epochs}"),
            (candidates_factor >= 1, f"attack.candidates_factor must be >= 1, got {candidates_factor}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.strategy = strategy
        self.initial = initial
        self.rounds = rounds
        self.epochs = epochs
        self.retrain_from_scratch = retrain_from_scratch
        self.candidates_factor = candidates_factor

    def initial_size(self, budget: int) -> int:
        return min(self.initial if self.initial is not None else max(1, budget // (self.rounds + 1)), budget)

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        if budget > pool_size:
            raise ConfigError(f"budget {budget} exceeds the attacker pool ({pool_size} images); activethief queries "
                              "each pool image at most once. Lower --budget or use a larger pool (--pool_data).")
        if self.initial is not None and self.initial > budget:
            raise ConfigError(f"attack.initial ({self.initial}) exceeds the budget ({budget})")

    def select(self, model: nn.Module, pool_x: Tensor, unlabeled: Tensor, labeled: Tensor, n: int,
               generator: torch.Generator) -> Tensor:
        """Pool indices (into pool_x) of the next `n` queries."""
        if self.strategy == "random":
            return unlabeled[torch.randperm(len(unlabeled), generator=generator)[:n]]
        probs = predict(model, pool_x[unlabeled])
        if self.strategy == "uncertainty":
            return unlabeled[entropy(probs).topk(min(n, len(unlabeled))).indices]
        candidates = torch.arange(len(unlabeled))
        if self.strategy == "uncertainty-kcenter":
            candidates = entropy(probs).topk(min(len(unlabeled), n * self.candidates_factor)).indices
        centers = predict(model, pool_x[labeled])
        chosen = kcenter_greedy(probs[candidates], centers, n)
        return unlabeled[candidates[chosen]]

    def run(self, ctx: AttackContext) -> nn.Module:
        budget = ctx.oracle.remaining
        first = torch.randperm(len(ctx.pool_x), generator=ctx.generator)[: self.initial_size(budget)]
        queried = torch.zeros(len(ctx.pool_x), dtype=torch.bool)
        queried[first] = True
        xs, targets = [ctx.pool_x[first]], [ctx.to_targets(ctx.oracle.query(ctx.pool_x[first]))]
        labeled = [first]
        model = ctx.new_surrogate()
        for round_idx in range(1, self.rounds + 2):
            if self.retrain_from_scratch and round_idx > 1:
                model = ctx.new_surrogate()
            model = ctx.train(model, torch.cat(xs), torch.cat(targets), self.epochs)
            ctx.checkpoint(model, round_idx, self.retrain_from_scratch or round_idx == 1)
            rounds_left = self.rounds + 1 - round_idx
            if rounds_left == 0 or ctx.oracle.remaining == 0:
                break
            n = -(-ctx.oracle.remaining // rounds_left)  # spread the rest evenly; the last round takes what is left
            unlabeled = torch.nonzero(~queried).flatten()
            if len(unlabeled) == 0:
                break
            new = self.select(model, ctx.pool_x, unlabeled, torch.cat(labeled), min(n, ctx.oracle.remaining),
                              ctx.generator)
            queried[new] = True
            labeled.append(new)
            xs.append(ctx.pool_x[new])
            targets.append(ctx.to_targets(ctx.oracle.query(ctx.pool_x[new])))
        return model


@hookimpl
def register_attacks(register):
    register("activethief", ActiveThief)
