"""Jacobian-based dataset augmentation (Papernot et al. 2017, "Practical Black-Box Attacks").

Three registry keys, one algorithm (`JBDA`); the two named ones only change defaults, every option stays settable:
  * `jbda`: steps towards the oracle's label, x + lam * sign(d F_label / dx) (Papernot et al.'s rule), and trains a
    fresh surrogate each round (stealbench's default since the start; unchanged).
  * `jbda-papernot`: Papernot et al. 2017 (Algorithm 1): the same rule, and one substitute fine-tuned across the
    rounds (warm start, `reinit_each_round: false`).
  * `jbda-orekondy`: JBDA as the MAD paper (Orekondy et al., ICLR 2020) runs it: its code
    (tribhuvanesh/prediction-poisoning, defenses/adversary/jacobian.py, policy `jbda`) adds
    lam * sign(d CE(F(x), label) / dx), a step *away* from the label (`direction: away`; its `jbself` is the
    step towards it, i.e. plain `jbda`'s rule), and builds a fresh substitute every round (`reinit_each_round:
    true`). Not reproduced: its sign flip every tau augmentations uses round(rho / tau), `sign_period` floor.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext


def jacobian_step(model: nn.Module, x: Tensor, labels: Tensor, step: float, *, grad_of: str = "prob",
                  batch_size: int = 512) -> Tensor:
    """clip(x + step * sign(d F_label(x) / dx), 0, 1) for a whole batch: one backward per chunk.

    The samples are independent (the model is in eval mode), so the gradient of the sum of the selected outputs
    is every sample's own gradient. Returns new tensors; `x` is never modified in place.
    """
    was_training = model.training
    model.eval()
    out = []
    device = next(model.parameters()).device
    for xb, yb in zip(x.split(batch_size), labels.split(batch_size)):
        xb = xb.to(device).detach().requires_grad_(True)
        logits = model(xb)
        scores = torch.softmax(logits, dim=-1) if grad_of == "prob" else logits
        selected = scores.gather(1, yb.to(device).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, xb)
        out.append((xb.detach() + step * grad.sign()).clamp_(0.0, 1.0).to(x.device))
    model.train(was_training)
    return torch.cat(out) if out else x.new_empty((0, *x.shape[1:]))


class JBDA(Attack):
    """Jacobian-based dataset augmentation (Papernot et al. 2017): the labelled set doubles each round."""

    def __init__(
        self,
        seed_per_class: int = 10,
        seed_source: Literal["balanced", "random"] = "balanced",
        lam: float = 0.1,
        direction: Literal["towards", "away"] = "towards",
        sign_period: int | None = None,
        rounds: int = 6,
        epochs_per_round: int = 10,
        reinit_each_round: bool = True,
        reservoir_size: int | None = None,
        reservoir_start: int = 3,
        grad_of: Literal["prob", "logit"] = "prob",
    ) -> None:
        """
        Args:
            seed_per_class: seed images per class (the seed set has seed_per_class * num_classes images).
            seed_source: `balanced` takes the framework's labelled seed set (`ctx.seed_set`: seed_per_class
                images of each class, chosen from the pool; Papernot et al.'s assumption, the labels cost no
                queries and only select images); `random` picks as many unlabelled pool images at random.
            lam: step size lambda, in pixel units.
            direction: `towards` steps along +sign(grad F_c) (Papernot's rule: c is the oracle's label),
                `away` along -sign(grad F_c).
            sign_period: tau; the step's sign flips every tau augmentations (Papernot et al. 2017:
                lambda_rho = lambda * (-1)^floor(rho / tau), rho = 0 for the augmentation after round 1).
                None never flips.
            rounds: substitute training rounds (a round = train, evaluate, augment).
            epochs_per_round: surrogate training epochs per round.
            reinit_each_round: train a freshly initialised surrogate each round (else fine-tune the last one).
            reservoir_size: kappa; from round `reservoir_start` (sigma) on, augment only kappa randomly chosen
                points per round, so the set grows linearly. None augments every point (doubling).
            reservoir_start: sigma, the first round that uses reservoir sampling.
            grad_of: differentiate the surrogate's softmax probability (`prob`, as the paper) or its logit.
        """
        checks = [
            (seed_per_class >= 1, f"attack.seed_per_class must be >= 1, got {seed_per_class}"),
            (lam > 0, f"attack.lam must be > 0, got {lam}"),
            (rounds >= 1, f"attack.rounds must be >= 1, got {rounds}"),
            (epochs_per_round >= 1, f"attack.epochs_per_round must be >= 1, got {epochs_per_round}"),
            (sign_period is None or sign_period >= 1, f"attack.sign_period must be >= 1 or null, got {sign_period}"),
            (reservoir_size is None or reservoir_size >= 1, f"attack.reservoir_size must be >= 1, got {reservoir_size}"),
            (reservoir_start >= 1, f"attack.reservoir_start must be >= 1, got {reservoir_start}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.seed_per_class = seed_per_class
        self.seed_source = seed_source
        self.lam = lam
        self.direction = direction
        self.sign_period = sign_period
        self.rounds = rounds
        self.epochs_per_round = epochs_per_round
        self.reinit_each_round = reinit_each_round
        self.reservoir_size = reservoir_size
        self.reservoir_start = reservoir_start
        self.grad_of = grad_of

    def seed_size(self, num_classes: int) -> int:
        return self.seed_per_class * num_classes

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        seed = self.seed_size(num_classes)
        if budget < seed:
            raise ConfigError(
                f"budget {budget} is smaller than the JBDA seed set ({seed} = {self.seed_per_class} per class x "
                f"{num_classes} classes). Raise --budget or lower --attack.seed_per_class."
            )
        if seed > pool_size:
            raise ConfigError(f"the JBDA seed set ({seed}) is larger than the attacker pool ({pool_size})")

    def step_size(self, round_idx: int) -> float:
        """Signed step for the augmentation after round `round_idx` (1-based).

        The paper counts augmentations from rho = 0, and the first one follows round 1, so rho = round_idx - 1.
        """
        sign = 1.0 if self.direction == "towards" else -1.0
        rho = round_idx - 1
        if self.sign_period is not None and (rho // self.sign_period) % 2 == 1:
            sign = -sign
        return sign * self.lam

    def new_per_source(self, num_classes: int) -> int:
        """New points each augmented point yields (variants that spawn several override this)."""
        return 1

    def augment(self, model: nn.Module, x: Tensor, labels: Tensor, round_idx: int, ctx: AttackContext) -> Tensor:
        """New points from `x` (labelled `labels` by the oracle) after round `round_idx`; variants override this."""
        return jacobian_step(model, x, labels, self.step_size(round_idx), grad_of=self.grad_of)

    def seed_images(self, ctx: AttackContext) -> Tensor:
        if self.seed_source == "balanced":
            if ctx.seed_set is None:
                raise ConfigError("attack.seed_source balanced needs a labelled seed set, which this context lacks; "
                                  "use --attack.seed_source random")
            x, _ = ctx.seed_set(self.seed_per_class)
            if len(x) < self.seed_size(ctx.num_classes):
                ctx.log(f"note: the pool has fewer than {self.seed_per_class} images of some class; "
                        f"seed set has {len(x)} images")
            return x.clone()
        return ctx.pool_x[torch.randperm(len(ctx.pool_x), generator=ctx.generator)[: self.seed_size(ctx.num_classes)]]

    def run(self, ctx: AttackContext) -> nn.Module:
        x = self.seed_images(ctx)
        answers = ctx.oracle.query(x)
        labels = answers.argmax(-1)
        targets = ctx.to_targets(answers)
        model = ctx.new_surrogate()
        for round_idx in range(1, self.rounds + 1):
            if self.reinit_each_round and round_idx > 1:
                model = ctx.new_surrogate()
            # a warm start fine-tunes the last round's net, which ctx.train returned in eval mode; Lightning keeps a
            # module's mode, so without this its dropout and batch norm would train as at test time (a no-op for
            # a fresh net)
            model = ctx.train(model.train(), x, targets, self.epochs_per_round)
            ctx.checkpoint(model, round_idx, self.reinit_each_round or round_idx == 1)
            if round_idx == self.rounds or ctx.oracle.remaining == 0:
                break
            source = torch.arange(len(x))
            if self.reservoir_size is not None and round_idx >= self.reservoir_start:
                source = torch.randperm(len(x), generator=ctx.generator)[: self.reservoir_size]
            per_source = self.new_per_source(ctx.num_classes)
            if len(source) * per_source > ctx.oracle.remaining:  # last round: a random subset that fits exactly
                keep = -(-ctx.oracle.remaining // per_source)
                source = source[torch.randperm(len(source), generator=ctx.generator)[:keep]]
            new_x = self.augment(model, x[source], labels[source], round_idx, ctx)[: ctx.oracle.remaining]
            new_answers = ctx.oracle.query(new_x)
            x = torch.cat([x, new_x])  # a new tensor: the originals are kept, never overwritten
            labels = torch.cat([labels, new_answers.argmax(-1)])
            targets = torch.cat([targets, ctx.to_targets(new_answers)])
        return model


class JBDAPapernot(JBDA):
    """JBDA as Papernot et al. 2017 run it: towards the label, one substitute fine-tuned across rounds."""

    def __init__(self, direction: Literal["towards", "away"] = "towards", reinit_each_round: bool = False,
                 **kwargs) -> None:
        """
        Args:
            direction: as `jbda`'s; `towards` (Papernot et al.'s rule, x + lam * sign(grad F_label)).
            reinit_each_round: as `jbda`'s; false: warm start, the substitute of the last round is trained further.
            **kwargs: the other options of `jbda` (seed set, lam, sign_period, rounds, reservoir, ...).
        """
        super().__init__(direction=direction, reinit_each_round=reinit_each_round, **kwargs)


class JBDAOrekondy(JBDA):
    """JBDA as the MAD paper's code runs it (Orekondy et al. 2020): away from the label, a fresh surrogate each
    round."""

    def __init__(self, direction: Literal["towards", "away"] = "away", reinit_each_round: bool = True,
                 **kwargs) -> None:
        """
        Args:
            direction: as `jbda`'s; `away`: x + lam * sign(grad CE(F(x), label)) = x - lam * sign(grad F_label),
                the MAD code's `jbda` policy.
            reinit_each_round: as `jbda`'s; true: a freshly initialised substitute every round, as the MAD code.
            **kwargs: the other options of `jbda` (seed set, lam, sign_period, rounds, reservoir, ...).
        """
        super().__init__(direction=direction, reinit_each_round=reinit_each_round, **kwargs)


@hookimpl
def register_attacks(register):
    register("jbda", JBDA)
    register("jbda-papernot", JBDAPapernot)
    register("jbda-orekondy", JBDAOrekondy)
