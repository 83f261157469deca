"""ActiveThief (Pal et al., AAAI 2020): pool-based active learning over rounds.

An initial random set is queried; each round the surrogate is trained on everything queried so far, evaluated,
and picks the next batch from the unqueried pool: the most `uncertainty` (entropy of its prediction), a
`kcenter` core set (greedy farthest points from the queried set in the space of its softmax outputs), or
`uncertainty-kcenter` (k-center among the `candidates_factor` x batch most uncertain), `dfal` (DeepFool-based
active learning, Ducoffe & Precioso 2018: the images whose DeepFool perturbation on the surrogate is smallest,
i.e. closest to its decision boundary) or `dfal-kcenter` (k-center among the `candidates_factor` x batch closest).
`random` is the baseline.

As in the paper, a validation split is held out of the initial random set (`val_fraction`, default 0.2 of it, as
the paper's code holds out 20% of the seed set): those images are queried (counted in the budget) before the
rounds, are never trained on, and each round's substitute trains epoch by epoch (one `ctx.train` epoch per call,
the run's seeded training) with early stopping on its agreement with the oracle's top-1 answers there: training
stops after `patience` epochs without a better agreement and the best epoch's weights are kept (ties: the
earlier epoch). Each epoch is its own `ctx.train` call, so the recipe's optimiser state and schedule restart
every epoch (with the `default` recipe, constant Adam, only Adam's moments restart). `val_fraction: 0` is
stealbench's earlier behaviour: no validation split, each round trains `epochs` epochs in one `ctx.train` call.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext

STRATEGIES = ("random", "uncertainty", "kcenter", "uncertainty-kcenter", "dfal", "dfal-kcenter")


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


def deepfool_distances(model: nn.Module, x: Tensor, *, max_iter: int = 20, overshoot: float = 0.02,
                       max_floats: int = 2 ** 24) -> Tensor:
    """(N,) L2 norm of DeepFool's perturbation r of every image on `model` (Moosavi-Dezfooli et al. 2016);
    inf where the predicted label has not flipped within `max_iter` steps, so those rank last.

    Each step linearises the model at x0 + (1 + overshoot) r and moves r to the nearest linearised boundary
    between the original class c and another k: r += |f_k - f_c| / ||w_k - w_c||^2 (w_k - w_c), the class k
    minimising |f_k - f_c| / ||w_k - w_c||. The returned norm is ||r|| (on a linear model exactly the distance
    to the nearest decision boundary); the overshoot only makes the step cross it. No pixel clipping, as the
    paper. All images of a chunk step together: per step one forward and one backward per class, never one
    per image; images whose label flipped are frozen and dropped from the later steps.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    if len(x):
        with torch.no_grad():
            num_classes = model(x[:1].to(device)).shape[-1]
        # the K input gradients of a chunk are held at once: bound them to max_floats numbers
        chunk = max(1, min(len(x), max_floats // (x[0].numel() * num_classes)))
        for xb in x.split(chunk):
            out.append(_deepfool_chunk(model, xb.to(device), max_iter, overshoot).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _deepfool_chunk(model: nn.Module, x0: Tensor, max_iter: int, overshoot: float) -> Tensor:
    shape = x0.shape[1:]
    flat0 = x0.flatten(1)
    with torch.no_grad():
        label = model(x0).argmax(-1)
    r_tot = torch.zeros_like(flat0)
    dist = torch.full((len(x0),), math.inf, device=x0.device)
    active = torch.arange(len(x0), device=x0.device)
    for step in range(max_iter + 1):
        xa = (flat0[active] + (1 + overshoot) * r_tot[active]).view(-1, *shape).requires_grad_(True)
        logits = model(xa)
        flipped = logits.argmax(-1) != label[active]
        dist[active[flipped]] = r_tot[active[flipped]].norm(dim=1)
        keep = ~flipped
        if step == max_iter or not keep.any():
            break
        k_count = logits.shape[-1]
        grads = torch.stack([  # (K, n, D): one backward per class for the whole chunk
            torch.autograd.grad(logits[:, k].sum(), xa, retain_graph=k < k_count - 1)[0].flatten(1)
            for k in range(k_count)])
        rows = torch.arange(len(xa), device=x0.device)
        own = label[active]
        w = grads - grads[own, rows][None]  # (K, n, D): w_k - w_c
        f = (logits - logits[rows, own][:, None]).detach().T  # (K, n): f_k - f_c
        w_norm = w.norm(dim=-1)
        ratio = f.abs() / w_norm.clamp_min(1e-12)
        ratio[own, rows] = math.inf  # never the own class
        ratio[w_norm == 0] = math.inf  # no gradient: no boundary in that direction
        best = ratio.argmin(0)  # (n,)
        w_best = w[best, rows]  # (n, D)
        scale = f[best, rows].abs() / w_norm[best, rows].pow(2).clamp_min(1e-24)
        scale = torch.where(torch.isfinite(ratio[best, rows]), scale, torch.zeros_like(scale))
        r_tot[active[keep]] += (scale[:, None] * w_best)[keep].detach()
        active = active[keep]
    return dist


class ActiveThief(Attack):
    """ActiveThief (Pal et al. 2020): rounds of active selection from the pool (uncertainty, k-center, or both)."""

    def __init__(self, strategy: Literal["random", "uncertainty", "kcenter", "uncertainty-kcenter", "dfal",
                                         "dfal-kcenter"] = "kcenter",
                 initial: int | None = None, rounds: int = 5, epochs: int = 10, retrain_from_scratch: bool = True,
                 candidates_factor: int = 4, deepfool_max_iter: int = 20, deepfool_overshoot: float = 0.02,
                 val_fraction: float = 0.2, patience: int = 5) -> None:
        """
        Args:
            strategy: how each round's batch is chosen: random, uncertainty, kcenter, uncertainty-kcenter, dfal
                or dfal-kcenter.
            initial: size of the initial random query set (default: budget / (rounds + 1)).
            rounds: selection rounds after the initial set; the rest of the budget is split evenly over them.
            epochs: surrogate training epochs per round (with a validation split: at most this many).
            retrain_from_scratch: re-initialise the surrogate each round (else fine-tune it).
            candidates_factor: uncertainty-kcenter / dfal-kcenter: k-center runs over the factor x batch most
                uncertain / closest to the surrogate's decision boundary images.
            deepfool_max_iter: dfal, dfal-kcenter: DeepFool steps per image (Moosavi-Dezfooli et al.: 20 or
                50); an image whose label has not flipped by then ranks last.
            deepfool_overshoot: dfal, dfal-kcenter: DeepFool's overshoot (paper: 0.02).
            val_fraction: share of the initial random set held out as a queried validation split for early
                stopping (the paper's code: 0.2 of the seed set); in [0, 0.9). 0: no split, no early stopping
                (stealbench's earlier behaviour).
            patience: with a validation split: stop a round's training after this many epochs without a better
                validation agreement (our choice; the best epoch's weights are kept).
        """
        checks = [
            (strategy in STRATEGIES, f"attack.strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}"),
            (initial is None or initial >= 1, f"attack.initial must be >= 1 or null, got {initial}"),
            (rounds >= 0, f"attack.rounds must be >= 0, got {rounds}"),
            (epochs >= 1, f"attack.epochs must be >= 1, got {epochs}"),
            (candidates_factor >= 1, f"attack.candidates_factor must be >= 1, got {candidates_factor}"),
            (isinstance(deepfool_max_iter, int) and deepfool_max_iter >= 1,
             f"attack.deepfool_max_iter must be an integer >= 1 (DeepFool steps), got {deepfool_max_iter!r}"),
            (deepfool_overshoot >= 0, f"attack.deepfool_overshoot must be >= 0, got {deepfool_overshoot}"),
            (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 0.9,
             f"attack.val_fraction must be in [0, 0.9) (0: no validation split), got {val_fraction!r}"),
            (isinstance(patience, int) and patience >= 1,
             f"attack.patience must be an integer >= 1 (epochs without a better validation agreement), "
             f"got {patience!r}"),
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
        self.deepfool_max_iter = deepfool_max_iter
        self.deepfool_overshoot = deepfool_overshoot
        self.val_fraction = float(val_fraction)
        self.patience = patience
        self._best_epochs: list[int] = []  # per round: the epoch early stopping kept (for report())
        self._val_queries = 0

    def initial_size(self, budget: int) -> int:
        return min(self.initial if self.initial is not None else max(1, budget // (self.rounds + 1)), budget)

    def validation_size(self, budget: int) -> int:
        """Queries held out of the initial set for validation: round(val_fraction x initial), at least 1 if > 0."""
        if self.val_fraction == 0:
            return 0
        return max(1, round(self.val_fraction * self.initial_size(budget)))

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        if budget > pool_size:
            raise ConfigError(f"budget {budget} exceeds the attacker pool ({pool_size} images); activethief queries "
                              "each pool image at most once. Lower --budget or use a larger pool (--pool_data).")
        if self.initial is not None and self.initial > budget:
            raise ConfigError(f"attack.initial ({self.initial}) exceeds the budget ({budget})")
        n_val, initial = self.validation_size(budget), self.initial_size(budget)
        if n_val >= initial:
            raise ConfigError(f"attack.val_fraction {self.val_fraction} holds out {n_val} of the {initial} initial "
                              "queries, leaving none to train on; raise --budget or attack.initial, or set "
                              "attack.val_fraction 0")

    def select(self, model: nn.Module, pool_x: Tensor, unlabeled: Tensor, labeled: Tensor, n: int,
               generator: torch.Generator) -> Tensor:
        """Pool indices (into pool_x) of the next `n` queries."""
        if self.strategy == "random":
            return unlabeled[torch.randperm(len(unlabeled), generator=generator)[:n]]
        if self.strategy in ("dfal", "dfal-kcenter"):
            distance = deepfool_distances(model, pool_x[unlabeled], max_iter=self.deepfool_max_iter,
                                          overshoot=self.deepfool_overshoot)
            wanted = n if self.strategy == "dfal" else n * self.candidates_factor
            closest = distance.topk(min(len(unlabeled), wanted), largest=False).indices
            if self.strategy == "dfal":
                return unlabeled[closest]
            chosen = kcenter_greedy(predict(model, pool_x[unlabeled[closest]]), predict(model, pool_x[labeled]), n)
            return unlabeled[closest[chosen]]
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
        n_val = min(self.validation_size(budget), len(first) - 1)
        self._val_queries, self._best_epochs = n_val, []
        val_x = val_labels = None
        if n_val > 0:  # queried first, counted in the budget, never trained on (and never selected again)
            val_idx, first = first[:n_val], first[n_val:]
            val_x = ctx.pool_x[val_idx]
            val_labels = ctx.oracle.query(val_x).argmax(-1).cpu()
        xs, targets = [ctx.pool_x[first]], [ctx.to_targets(ctx.oracle.query(ctx.pool_x[first]))]
        labeled = [first]
        model = ctx.new_surrogate()
        for round_idx in range(1, self.rounds + 2):
            if self.retrain_from_scratch and round_idx > 1:
                model = ctx.new_surrogate()
            if val_x is None:
                model = ctx.train(model, torch.cat(xs), torch.cat(targets), self.epochs)
            else:
                model = self.train_early_stopped(ctx, model, torch.cat(xs), torch.cat(targets), val_x, val_labels)
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

    def train_early_stopped(self, ctx: AttackContext, model: nn.Module, x: Tensor, targets: Tensor, val_x: Tensor,
                            val_labels: Tensor) -> nn.Module:
        """Up to `epochs` epochs, one `ctx.train` call each (fine-tuning the same network), stopped after
        `patience` epochs without a better agreement with `val_labels`; the best epoch's weights are restored."""
        best, best_state, best_epoch, stale = -1.0, None, 0, 0
        for epoch in range(1, self.epochs + 1):
            model = ctx.train(model, x, targets, 1)  # fine-tuned in train mode: training.fit sets it
            score = agreement(model, val_x, val_labels)
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_epoch != epoch:
            model.load_state_dict(best_state)
        self._best_epochs.append(best_epoch)
        return model

    def report(self) -> dict[str, float]:
        if not self._val_queries:
            return {}
        return {"queries/validation": float(self._val_queries),
                "early_stopping/mean_best_epoch": sum(self._best_epochs) / max(1, len(self._best_epochs))}


def agreement(model: nn.Module, x: Tensor, labels: Tensor) -> float:
    """Share of `x` where the model's top-1 class is `labels` (the oracle's top-1 answers)."""
    return float((predict(model, x).argmax(-1) == labels).double().mean())


@hookimpl
def register_attacks(register):
    register("activethief", ActiveThief)
