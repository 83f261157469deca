"""Knockoff Nets (Orekondy, Schiele & Fritz, CVPR 2019): query natural images from the attacker's pool.

`policy: random` samples pool images uniformly; `policy: adaptive` learns which groups of pool images to sample
with a gradient-bandit policy, rewarded by the answers' certainty (top-1 minus top-2), diversity (mass above the
recent mean answer) and the knockoff's loss on them. Queries go in batches of `batch_size`; the policy is updated
once per batch. As in the paper, the knockoff is trained online while sampling (`reward_model: online`, the
default): after each answered batch the loss reward is the online knockoff's cross-entropy on those answers, before
it takes one SGD step on them (only already-answered queries: no extra queries). The checkpoint surrogates are
trained, as before, on everything queried. `reward_model: checkpoint` is stealbench's earlier deviation: the loss
reward uses the surrogate of the previous checkpoint, untrained until the first checkpoint. The bandit's arms are
what the attacker can know: the labels of its own data set (``--pool_data``, as in Knockoff Nets, whose adversary
labels its own images), or, for the victim task's unlabelled pool, k-means clusters of the pool images
(`arms: clusters`); never the victim task's ground truth.
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

REWARDS = ("certainty", "diversity", "loss")
_PROB_FLOOR = 1e-8  # the loss reward's log never sees 0
_H_LIMIT = 50.0  # preferences stay in [-50, 50]: softmax never overflows


def certainty_reward(answers: Tensor) -> Tensor:
    """Top-1 minus top-2 probability of each answer, in [0, 1]."""
    if answers.shape[1] < 2:
        return answers[:, 0].clone()
    top2 = answers.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).clamp(0, 1)


def diversity_reward(answers: Tensor, recent_mean: Tensor | None) -> Tensor:
    """Sum over classes of max(0, y_k - mean of recent answers_k), in [0, 1] (0 before any history)."""
    if recent_mean is None:
        return torch.zeros(len(answers), dtype=answers.dtype)
    return (answers - recent_mean).clamp_min(0).sum(1).clamp(0, 1)


def loss_reward(answers: Tensor, surrogate_probs: Tensor) -> Tensor:
    """Cross-entropy of the surrogate against the answers, divided by log K (finite: probabilities floored)."""
    k = answers.shape[1]
    ce = -(answers * surrogate_probs.clamp_min(_PROB_FLOOR).log()).sum(1)
    return (ce / math.log(max(k, 2))).clamp(0, -math.log(_PROB_FLOOR))


def kmeans_assign(x: Tensor, k: int, generator: torch.Generator, iters: int = 20, side: int = 8) -> Tensor:
    """Cluster index of every image: Lloyd's k-means (k-means++ start) on images average-pooled to <= side x side.

    Batched over images; the loops run over iterations and the k initial centres only.
    """
    feats = torch.nn.functional.adaptive_avg_pool2d(x.float(), (min(side, x.shape[2]), min(side, x.shape[3])))
    feats = feats.flatten(1)
    n = len(feats)
    centres = feats[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):  # k-means++: the next centre drawn in proportion to the squared distance
        d2 = torch.cdist(feats, centres).min(1).values.pow(2)
        weights = d2 if d2.sum() > 0 else torch.ones(n)
        centres = torch.cat([centres, feats[torch.multinomial(weights, 1, generator=generator)]])
    assign = torch.cdist(feats, centres).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centres).index_add_(0, assign, feats)
        counts = torch.bincount(assign, minlength=k).clamp_min(1).unsqueeze(1).to(feats.dtype)
        centres = torch.where(counts > 0, sums / counts, centres)
        new = torch.cdist(feats, centres).argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


class GradientBandit:
    """Softmax preferences H over arms, updated with a running-mean baseline (Sutton & Barto, 2.8), batched."""

    def __init__(self, num_arms: int, step: float) -> None:
        self.h = torch.zeros(num_arms, dtype=torch.float64)
        self.step = step
        self.baseline = 0.0
        self.count = 0

    def probs(self, available: Tensor) -> Tensor:
        logits = self.h.masked_fill(~available, float("-inf"))
        return torch.softmax(logits, 0)

    def update(self, arms: Tensor, rewards: Tensor, available: Tensor) -> None:
        rewards = torch.nan_to_num(rewards.double(), nan=0.0, posinf=0.0, neginf=0.0)
        pi = self.probs(available)
        advantage = rewards - self.baseline  # (n,)
        onehot = torch.nn.functional.one_hot(arms, len(self.h)).double()
        grad = (advantage[:, None] * (onehot - pi[None, :])).mean(0)
        self.h = (self.h + self.step * grad.masked_fill(~available, 0.0)).clamp(-_H_LIMIT, _H_LIMIT)
        n = len(rewards)
        self.count += n
        self.baseline += (rewards.sum().item() - n * self.baseline) / self.count


class Knockoff(Attack):
    """Knockoff Nets (Orekondy et al. 2019): pool images, random or by a gradient-bandit policy over pool classes."""

    def __init__(self, policy: Literal["random", "adaptive"] = "random", checkpoints: list[int] | None = None,
                 num_checkpoints: int = 5, epochs: int = 10, retrain_from_scratch: bool = True,
                 batch_size: int = 50, bandit_step: float = 0.1,
                 rewards: list[str] = ["certainty", "diversity", "loss"],  # noqa: B006 (JSON-friendly default)
                 diversity_window: int = 10, arms: Literal["auto", "labels", "clusters"] = "auto",
                 num_clusters: int | None = None, reward_model: Literal["online", "checkpoint"] = "online",
                 online_lr: float = 0.01, online_momentum: float = 0.5) -> None:
        """
        Args:
            policy: `random` (uniform over the pool) or `adaptive` (gradient bandit over pool classes).
            checkpoints: query counts at which the surrogate is trained and evaluated (default: a doubling
                sequence ending at the budget, `num_checkpoints` long).
            num_checkpoints: length of the default doubling sequence.
            epochs: surrogate training epochs at each checkpoint.
            retrain_from_scratch: re-initialise the surrogate at each checkpoint (else fine-tune it).
            batch_size: adaptive: queries per policy step.
            bandit_step: adaptive: the gradient bandit's step size alpha.
            rewards: adaptive: which rewards to add up (certainty, diversity, loss).
            diversity_window: adaptive: the diversity reward compares with the mean of this many recent batches.
            arms: adaptive: the bandit's arms. `labels`: the pool's own labels (only with --pool_data, whose labels
                the attacker has); `clusters`: k-means clusters of the pool images; `auto`: labels when the
                attacker has them, else clusters.
            num_clusters: adaptive with clusters: how many (default: the victim's number of classes).
            reward_model: adaptive: the network whose loss the loss reward measures. `online` (the paper): a
                knockoff trained online, one SGD step on each batch right after its answers come, the reward taken
                before that step; `checkpoint`: stealbench's earlier deviation, the surrogate of the previous
                checkpoint (untrained until the first one).
            online_lr: adaptive, online: the online knockoff's SGD learning rate (our choice).
            online_momentum: adaptive, online: its SGD momentum (our choice).
        """
        checks = [
            (policy in ("random", "adaptive"), f"attack.policy must be one of random, adaptive; got {policy!r}"),
            (epochs >= 1, f"attack.epochs must be >= 1, got {epochs}"),
            (num_checkpoints >= 1, f"attack.num_checkpoints must be >= 1, got {num_checkpoints}"),
            (batch_size >= 1, f"attack.batch_size must be >= 1, got {batch_size}"),
            (bandit_step > 0 and math.isfinite(bandit_step), f"attack.bandit_step must be > 0, got {bandit_step}"),
            (bool(rewards) and all(r in REWARDS for r in rewards),
             f"attack.rewards must be a non-empty list drawn from {', '.join(REWARDS)}; got {rewards!r}"),
            (diversity_window >= 1, f"attack.diversity_window must be >= 1, got {diversity_window}"),
            (arms in ("auto", "labels", "clusters"), f"attack.arms must be one of auto, labels, clusters; got {arms!r}"),
            (num_clusters is None or num_clusters >= 2, f"attack.num_clusters must be >= 2 or null, got {num_clusters}"),
            (reward_model in ("online", "checkpoint"),
             f"attack.reward_model must be one of online, checkpoint; got {reward_model!r}"),
            (online_lr > 0 and math.isfinite(online_lr), f"attack.online_lr must be > 0, got {online_lr}"),
            (0 <= online_momentum < 1, f"attack.online_momentum must be in [0, 1), got {online_momentum}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.policy = policy
        self.checkpoints = list(checkpoints) if checkpoints else None
        self.num_checkpoints = num_checkpoints
        self.epochs = epochs
        self.retrain_from_scratch = retrain_from_scratch
        self.batch_size = batch_size
        self.bandit_step = bandit_step
        self.rewards = list(rewards)
        self.diversity_window = diversity_window
        self.arms = arms
        self.num_clusters = num_clusters
        self.reward_model = reward_model
        self.online_lr = online_lr
        self.online_momentum = online_momentum
        self._online: nn.Module | None = None  # adaptive, online: the knockoff trained while sampling
        self._online_opt = None
        self._online_steps = 0
        self._reward_log: list[dict[str, float]] = []  # per policy step: mean of each reward (for tests/reports)
        self._policy: Tensor | None = None

    def schedule(self, budget: int) -> list[int]:
        if self.checkpoints:
            return sorted(set(self.checkpoints))
        return sorted({max(1, budget >> k) for k in range(self.num_checkpoints)})

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        if budget > pool_size:
            raise ConfigError(f"budget {budget} exceeds the attacker pool ({pool_size} images); knockoff queries each "
                              "pool image at most once. Lower --budget or use a larger pool (--pool_data).")
        bad = [c for c in self.schedule(budget) if c < 1 or c > budget]
        if bad:
            raise ConfigError(f"attack.checkpoints {bad} lie outside [1, budget={budget}]")

    def run(self, ctx: AttackContext) -> nn.Module:
        order = torch.randperm(len(ctx.pool_x), generator=ctx.generator)
        model = ctx.new_surrogate()
        chooser = self._random_chooser(order) if self.policy == "random" else self._adaptive_chooser(ctx, order)
        xs: list[Tensor] = []
        targets: list[Tensor] = []
        self._model = model
        self._online = self._online_opt = None
        self._online_steps = 0
        if self.policy == "adaptive" and self.reward_model == "online" and "loss" in self.rewards:
            # the online knockoff: the run's first surrogate (seeded like every ctx.new_surrogate(); a copy when the
            # checkpoints fine-tune that same network), so the checkpoint surrogates draw the same seeds as before
            self._online = (model if self.retrain_from_scratch else copy.deepcopy(model)).to(ctx.device)
            self._online_opt = ctx.optimizer(self._online.parameters(), optimizer="sgd", lr=self.online_lr,
                                             momentum=self.online_momentum, nesterov=False, weight_decay=0.0,
                                             schedule="constant")
        for round_idx, point in enumerate(self.schedule(ctx.oracle.budget), start=1):
            while ctx.oracle.used < point and ctx.oracle.remaining > 0:
                n = min(point - ctx.oracle.used, ctx.oracle.remaining,
                        self.batch_size if self.policy == "adaptive" else point)
                idx = chooser(n)
                if len(idx) == 0:
                    break
                x_new = ctx.pool_x[idx]
                answers = ctx.oracle.query(x_new)
                xs.append(x_new)
                targets.append(ctx.to_targets(answers))
                if self.policy == "adaptive":
                    self._feedback(ctx, x_new, answers)
                    if self._online is not None:
                        self._online_step(x_new, targets[-1])
            if self.retrain_from_scratch:
                model = ctx.new_surrogate()
            model = ctx.train(model, torch.cat(xs), torch.cat(targets), self.epochs)
            self._model = model
            ctx.checkpoint(model, round_idx, self.retrain_from_scratch)
        if self.policy == "adaptive" and self._policy is not None:
            top = self._policy.topk(min(5, len(self._policy)))
            ctx.log("knockoff adaptive policy, top arms: "
                    + ", ".join(f"{int(c)}: {p:.2f}" for p, c in zip(top.values.tolist(), top.indices.tolist())))
        return model

    # -- random ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _random_chooser(order: Tensor):
        state = {"next": 0}

        def choose(n: int) -> Tensor:
            idx = order[state["next"]:state["next"] + n]
            state["next"] += len(idx)
            return idx

        return choose

    # -- adaptive -------------------------------------------------------------------------------------------------
    def arm_of_each_image(self, ctx: AttackContext) -> Tensor:
        """The bandit arm of every pool image: the attacker's own labels, or k-means clusters of the images."""
        use_labels = self.arms == "labels" or (self.arms == "auto" and ctx.pool_labels is not None)
        if use_labels:
            if ctx.pool_labels is None:
                raise ConfigError("attack.arms labels needs labels the attacker owns: a pool from another data set "
                                  "(--pool_data ...). The victim task's pool is unlabelled; use --attack.arms clusters")
            return ctx.pool_labels.long()
        k = self.num_clusters or ctx.num_classes
        return kmeans_assign(ctx.pool_x, min(k, len(ctx.pool_x)), ctx.generator)

    def _adaptive_chooser(self, ctx: AttackContext, order: Tensor):
        classes = self.arm_of_each_image(ctx)[order]
        num_arms = int(classes.max()) + 1 if len(classes) else 1
        # per arm, its unqueried pool images in random order (one sort, no per-image loop)
        by_arm = torch.argsort(classes, stable=True)
        counts = torch.bincount(classes, minlength=num_arms)
        starts = torch.cumsum(counts, 0) - counts
        taken = torch.zeros(num_arms, dtype=torch.long)
        self._bandit = GradientBandit(num_arms, self.bandit_step)
        self._recent: list[Tensor] = []

        def choose(n: int) -> Tensor:
            available = taken < counts
            if not available.any():
                return torch.empty(0, dtype=torch.long)
            pi = self._bandit.probs(available)
            self._policy = pi
            arms = torch.multinomial(pi.float(), n, replacement=True, generator=ctx.generator)
            want = torch.bincount(arms, minlength=num_arms)
            got = torch.minimum(want, counts - taken)
            picked, picked_arms = [], []
            for arm in torch.nonzero(got).flatten().tolist():  # a loop over classes, not images
                lo = int(starts[arm] + taken[arm])
                picked.append(order[by_arm[lo:lo + int(got[arm])]])
                picked_arms.append(torch.full((int(got[arm]),), arm, dtype=torch.long))
                taken[arm] += got[arm]
            self._arms = torch.cat(picked_arms)
            self._available = available
            return torch.cat(picked)

        return choose

    def _feedback(self, ctx: AttackContext, x: Tensor, answers: Tensor) -> None:
        answers = answers.detach().double().cpu()
        parts: dict[str, Tensor] = {}
        if "certainty" in self.rewards:
            parts["certainty"] = certainty_reward(answers)
        if "diversity" in self.rewards:
            mean = torch.cat(self._recent).mean(0) if self._recent else None
            parts["diversity"] = diversity_reward(answers, mean)
        if "loss" in self.rewards:
            net = self._online if self._online is not None else self._model
            device = next(net.parameters()).device
            with torch.no_grad():
                net.eval()
                probs = torch.softmax(net(x.to(device)).double(), -1).cpu()
            parts["loss"] = loss_reward(answers, probs)
        self._recent = (self._recent + [answers])[-self.diversity_window:]
        reward = torch.stack(list(parts.values())).sum(0)
        self._bandit.update(self._arms, reward, self._available)
        self._reward_log.append({k: float(v.mean()) for k, v in {**parts, "total": reward}.items()})

    def _online_step(self, x: Tensor, targets: Tensor) -> None:
        """One optimiser step of the online knockoff on the batch just answered (soft cross-entropy, whole batch)."""
        net, opt = self._online, self._online_opt
        if len(x) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            return  # batch norm cannot train on a batch of one image; the reward was still taken
        device = next(net.parameters()).device
        net.train()
        with opt.autocast():
            logits = net(x.to(device))
        loss = -(targets.to(device).float() * torch.log_softmax(logits.float(), -1)).sum(-1).mean()
        opt.step(loss)
        net.eval()
        self._online_steps += 1

    def report(self) -> dict[str, float]:
        return {"online/steps": float(self._online_steps)} if self._online is not None else {}


@hookimpl
def register_attacks(register):
    register("knockoff", Knockoff)
