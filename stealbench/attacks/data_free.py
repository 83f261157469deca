"""What the data-free attacks (DFME, MAZE) share: the generator, the forward-difference gradient estimate through
the black box, logit recovery, and the bookkeeping of a generator/student game under a query budget.

The generator maps Gaussian noise to images; its last layer is batch-normalised (as DFAD/DFME's GeneratorA and
MAZE's conv3_gen) and its activation maps to the data range. Both papers perturb the *pre-activation* output
(x = act(a); probes at act(a + eps * u)), so the gradient estimate is with respect to `a`, and the generator's
graph is entered there.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import AttackContext


class Generator(nn.Module):
    """DFAD/DFME's GeneratorA (MAZE's conv3_gen is the same stack): linear -> BN -> (up x2, conv, BN, LeakyReLU)
    x 2 -> conv -> BN. The output is the pre-activation `a`; `activate(a)` gives pixels in [0, 1].

    Sizes not divisible by 4 are generated at the next multiple and cropped (the papers' sizes, 28 and 32, are).
    """

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int],
                 activation: Literal["tanh", "sigmoid"] = "tanh", width: int = 128,
                 affine_out: bool = False) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.shape = (channels, height, width_px)
        self.init = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.latent_dim, self.activation, self.width = latent_dim, activation, width
        self.linear = nn.Linear(latent_dim, width * self.init[0] * self.init[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.BatchNorm2d(channels, affine=affine_out),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Pre-activation images (N, C, H, W)."""
        a = self.linear(z).view(len(z), self.width, *self.init)
        return self.body(a)[:, :, : self.shape[1], : self.shape[2]]

    def activate(self, a: Tensor) -> Tensor:
        """Pixels in [0, 1]: (tanh(a) + 1) / 2, the papers' tanh output rescaled from [-1, 1], or sigmoid(a)."""
        return (torch.tanh(a) + 1) / 2 if self.activation == "tanh" else torch.sigmoid(a)


def recover_logits(probs: Tensor, floor: float = 1e-30) -> Tensor:
    """DFME's logit recovery: log-probabilities centred by their mean (logits are known up to a constant per
    sample; the mean correction picks the representative with zero mean). `floor` guards log(0)."""
    log_p = probs.clamp_min(floor).log()
    return log_p - log_p.mean(dim=-1, keepdim=True)


def l1_disagreement(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Per-sample L1 between logits, averaged over classes (DFME's loss, reduction none)."""
    return (student_logits - teacher_logits).abs().mean(dim=-1)


def kl_disagreement(student_logits: Tensor, teacher_probs: Tensor, floor: float = 1e-30) -> Tensor:
    """Per-sample KL(teacher || student) (MAZE's loss, reduction none)."""
    t = teacher_probs.clamp_min(0)
    return (t * (t.clamp_min(floor).log() - F.log_softmax(student_logits, dim=-1))).sum(dim=-1)


def unit_directions(n: int, m: int, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """(n, m, *shape) Gaussian directions normalised to unit length per sample and direction (uniform on the
    sphere), drawn on the CPU from `generator` (the same on every device)."""
    u = torch.randn(n, m, *shape, generator=generator)
    return u / u.flatten(2).norm(dim=-1).view(n, m, *([1] * len(shape)))


def forward_difference(loss_at: Callable[[Tensor], Tensor], a: Tensor, m: int, epsilon: float,
                       generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The forward-difference estimate of d mean_i L_i / d a_i along `m` random unit directions (both papers):

        g_i = d / m * sum_j (L_i(a_i + eps u_ij) - L_i(a_i)) / eps * u_ij,  divided by N for the batch mean,

    where d is the dimension of one sample. `loss_at(points)` evaluates the per-sample loss of the (N * (m+1))
    pre-activation points in one batch (the unperturbed point last in each sample's block, so the m+1 copies of
    a batch go to the oracle in one call). Returns (estimate shaped like `a`, per-sample L at a).
    """
    n, shape = a.shape[0], tuple(a.shape[1:])
    d = math.prod(shape)
    u = unit_directions(n, m, shape, generator).to(a.device, a.dtype)
    points = torch.cat([a.unsqueeze(1) + epsilon * u, a.unsqueeze(1)], dim=1).view(n * (m + 1), *shape)
    values = loss_at(points).view(n, m + 1)
    diffs = (values[:, :m] - values[:, m:]) / epsilon  # (n, m)
    grad = (d / m) * (diffs.view(n, m, *([1] * len(shape))) * u).sum(dim=1) / n
    return grad, values[:, m]


def ascend_generator(optimizer, a: Tensor, loss_at: Callable[[Tensor], Tensor], m: int, epsilon: float,
                     generator: torch.Generator) -> None:
    """One generator step of both games: the disagreement's forward-difference gradient at the generator's
    pre-activation output `a` (no autograd through the black box), ascended by backpropagating its negative
    through the generator (`optimizer`: the generator's StepOptimizer)."""
    with torch.no_grad():
        grad, _ = forward_difference(loss_at, a.detach(), m, epsilon, generator)
    optimizer.zero_grad()
    optimizer.backward(tensor=a, grad=-grad)
    optimizer.apply()


def schedule(budget: int, num_checkpoints: int, checkpoints: list[int] | None = None) -> list[int]:
    """The query counts of the budget curve: `checkpoints` if given (the budget is always the last), else a
    doubling sequence `num_checkpoints` long ending at the budget."""
    if checkpoints:
        return sorted({int(c) for c in checkpoints if c < budget} | {budget})
    return sorted({max(1, budget >> k) for k in range(num_checkpoints)})


def check_checkpoints(checkpoints: list[int] | None, budget: int) -> None:
    bad = [c for c in checkpoints or [] if not 1 <= c <= budget]
    if bad:
        raise ConfigError(f"attack.checkpoints {bad} lie outside [1, budget={budget}]")


class QueryLedger:
    """The game's query bookkeeping: what each kind of query cost, and the doubling checkpoint schedule.

    With `retrain_epochs`, the ledger also keeps every image the game sent and its training target, and each
    checkpoint evaluates a fresh surrogate trained from scratch on all of them (`ctx.train`, the run's surrogate
    recipe) instead of the game's student: the model-extraction-benchmark's "Track A", which measures the queries'
    quality apart from the student the game trained online (the papers report the student).
    """

    def __init__(self, budget: int, num_checkpoints: int, checkpoints: list[int] | None = None,
                 retrain_epochs: int | None = None) -> None:
        self.budget = budget
        self.points = schedule(budget, num_checkpoints, checkpoints)
        self.counts: dict[str, int] = {}
        self.round = 0  # checkpoints taken: the round of the last one (rounds count from 1, one per checkpoint)
        self.passed = 0  # schedule points reached
        self.last: int | None = None  # the query count of the last checkpoint
        self.retrain_epochs = retrain_epochs
        self.sent: list[tuple[Tensor, Tensor]] = []  # (images, targets) on the CPU, only with retrain_epochs
        self.evaluated: nn.Module | None = None  # the model the last checkpoint evaluated

    def add(self, kind: str, n: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + int(n)

    def targets(self, ctx: AttackContext, x: Tensor) -> Tensor:
        """The oracle's answers for `x` as training targets (the run's label mode), kept when retraining."""
        targets = ctx.to_targets(query(ctx, x)).float()
        if self.retrain_epochs is not None:
            self.sent.append((x.detach().float().clamp(0, 1).cpu(), targets.detach().cpu()))
        return targets

    def due(self, used: int) -> bool:
        """Whether the query count has reached the next checkpoint."""
        return self.passed < len(self.points) and used >= self.points[self.passed]

    def checkpoint(self, ctx: AttackContext, model: nn.Module) -> None:
        """Evaluate `model` now (all points passed at once count as one: queries are spent in steps), as the next
        round."""
        while self.due(ctx.oracle.used):
            self.passed += 1
        self._evaluate(ctx, model)

    def finish(self, ctx: AttackContext, model: nn.Module) -> nn.Module:
        """The final checkpoint, unless the last one was taken at the current query count; returns the model
        evaluated last (the run's final surrogate)."""
        if self.last != ctx.oracle.used:
            self._evaluate(ctx, model)
        return self.evaluated if self.evaluated is not None else model

    def _evaluate(self, ctx: AttackContext, model: nn.Module) -> None:
        self.round += 1
        retrained = self.retrain_epochs is not None
        if retrained:
            x, targets = (torch.cat(part) for part in zip(*self.sent))
            model = ctx.train(ctx.new_surrogate().train(), x, targets, self.retrain_epochs)
        ctx.checkpoint(model, self.round, retrained)
        self.last, self.evaluated = ctx.oracle.used, model


def query(ctx: AttackContext, x: Tensor) -> Tensor:
    """The oracle's released probabilities for pixels `x` (float32, on x's device); asserts the budget holds."""
    assert len(x) <= ctx.oracle.remaining, "a data-free step asked for more queries than remain"
    return ctx.oracle.query(x.detach().float().clamp(0, 1)).float()


def check_evaluate(evaluate: str, retrain_epochs: int) -> int | None:
    """The `evaluate`/`retrain_epochs` options of a game: QueryLedger's retrain_epochs (None: the student)."""
    if evaluate not in ("student", "retrain"):
        raise ConfigError(f"attack.evaluate must be student or retrain, got {evaluate!r}")
    if isinstance(retrain_epochs, bool) or not isinstance(retrain_epochs, int) or retrain_epochs < 1:
        raise ConfigError(f"attack.retrain_epochs must be an integer >= 1, got {retrain_epochs!r}")
    return retrain_epochs if evaluate == "retrain" else None


def check_common(*, batch_size: int, latent_dim: int, epsilon: float, directions: int, num_checkpoints: int,
                 generator_steps: int, student_steps: int, lr_student: float, lr_generator: float,
                 activation: str, name: str) -> None:
    checks = [
        (batch_size >= 1, f"attack.batch_size must be >= 1, got {batch_size}"),
        (latent_dim >= 1, f"attack.latent_dim must be >= 1, got {latent_dim}"),
        (math.isfinite(epsilon) and epsilon > 0, f"attack.epsilon must be a positive number, got {epsilon}"),
        (directions >= 1, f"attack.{name} must be >= 1, got {directions}"),
        (num_checkpoints >= 1, f"attack.num_checkpoints must be >= 1, got {num_checkpoints}"),
        (generator_steps >= 1, f"attack.generator_steps must be >= 1, got {generator_steps}"),
        (student_steps >= 1, f"attack.student_steps must be >= 1, got {student_steps}"),
        (math.isfinite(lr_student) and lr_student > 0, f"attack.lr_student must be > 0, got {lr_student}"),
        (math.isfinite(lr_generator) and lr_generator > 0, f"attack.lr_generator must be > 0, got {lr_generator}"),
        (activation in ("tanh", "sigmoid"), f"attack.activation must be tanh or sigmoid, got {activation!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_budget(budget: int, batch_size: int, directions: int, attack: str, student_batches: int = 0) -> None:
    """ConfigError unless `budget` pays for one generator step ((directions + 1) x batch_size probes) and
    `student_batches` student batches after it."""
    need = (directions + 1 + student_batches) * batch_size
    if budget < need:
        then = f" + {student_batches} student batch" if student_batches else ""
        raise ConfigError(f"budget {budget} is too small for one {attack} generator step: ({directions} directions "
                          f"+ 1{then}) x batch {batch_size} = {need} queries. Raise --budget or lower "
                          "--attack.batch_size")


__all__ = ["Generator", "QueryLedger", "check_budget", "check_common", "forward_difference", "kl_disagreement",
           "l1_disagreement", "query", "recover_logits", "unit_directions"]
