"""MAZE: Model stealing using zeroth-order gradient estimation (Kariyappa, Prakash & Qureshi, CVPR 2021).

The generator/student game of DFME with MAZE's choices: the disagreement is KL(teacher || student); the
generator's gradient through the black box is the forward-difference estimate along `directions` (N) random unit
directions, d/N sum_j (L(a + mu u_j) - L(a)) / mu u_j, in the generator's pre-activation space; the first student
step of an iteration reuses the generator step's unperturbed batch and its answers (no new queries); the last
student batch of each iteration joins an experience-replay set, on which the student then takes `replay_steps`
more steps (replay costs no queries). Per iteration: batch x ((N + 1) n_G + n_S - 1) queries.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext
from .data_free import (Generator, QueryLedger, ascend_generator, check_budget, check_checkpoints, check_common,
                        check_evaluate, kl_disagreement)


class MAZE(Attack):
    """MAZE (Kariyappa et al. 2021): generator vs student on KL, zeroth-order generator gradient, replay."""

    needs_pool = False

    def __init__(self, batch_size: int = 128, latent_dim: int = 100, directions: int = 10, epsilon: float = 1e-3,
                 generator_steps: int = 1, student_steps: int = 5, replay_steps: int = 10,
                 replay_size: int | None = None, lr_student: float = 0.1, lr_generator: float = 1e-4,
                 optimizer: Literal["paper", "recipe"] = "paper", activation: Literal["tanh", "sigmoid"] = "tanh",
                 num_checkpoints: int = 8, checkpoints: list[int] | None = None,
                 evaluate: Literal["student", "retrain"] = "student", retrain_epochs: int = 10) -> None:
        """
        Args:
            batch_size: images per generator and student step (MAZE's code: 128).
            latent_dim: size of the generator's noise (100).
            directions: N, random directions of the gradient estimate (10); a generator step costs
                (N + 1) x batch_size queries.
            epsilon: mu, the forward-difference step in pre-activation space (1e-3).
            generator_steps: n_G, generator steps per iteration (1).
            student_steps: n_S, student steps on fresh generator images per iteration (5).
            replay_steps: student steps on the experience-replay set per iteration (10); 0 turns replay off.
            replay_size: most images kept for replay (oldest dropped first); None keeps all, as MAZE.
            lr_student: the student's learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine over the
                iterations: MAZE's code).
            lr_generator: the generator's learning rate (SGD likewise, 1e-4).
            optimizer: `paper` (the above) or `recipe`: both networks train with the run's surrogate recipe as
                it is (lr_student and lr_generator then unused), a deviation.
            activation: the generator's output in pixel space [0, 1]: `tanh` ((tanh + 1) / 2) or `sigmoid`.
            num_checkpoints: points of the budget curve, a doubling sequence of query counts ending at the budget.
            checkpoints: the curve's query counts instead (the budget is always added as the last).
            evaluate: what each checkpoint evaluates: `student` (the game's student, as the paper reports) or
                `retrain` (a fresh surrogate trained from scratch on every image sent so far and its answer, with
                the run's surrogate recipe for `retrain_epochs` epochs: the model-extraction-benchmark's Track A,
                the queries' quality apart from the student; a measurement protocol, not the paper's).
            retrain_epochs: the epochs of that retraining (evaluate retrain only).
        """
        check_common(batch_size=batch_size, latent_dim=latent_dim, epsilon=epsilon, directions=directions,
                     num_checkpoints=num_checkpoints, generator_steps=generator_steps, student_steps=student_steps,
                     lr_student=lr_student, lr_generator=lr_generator, activation=activation, name="directions")
        if replay_steps < 0:
            raise ConfigError(f"attack.replay_steps must be >= 0, got {replay_steps}")
        if replay_size is not None and replay_size < batch_size:
            raise ConfigError(f"attack.replay_size must be null or >= batch_size ({batch_size}), got {replay_size}")
        if optimizer not in ("paper", "recipe"):
            raise ConfigError(f"attack.optimizer must be paper or recipe, got {optimizer!r}")
        self.batch_size, self.latent_dim, self.directions, self.epsilon = batch_size, latent_dim, directions, epsilon
        self.generator_steps, self.student_steps = generator_steps, student_steps
        self.replay_steps, self.replay_size = replay_steps, replay_size
        self.lr_student, self.lr_generator, self.optimizer = lr_student, lr_generator, optimizer
        self.activation, self.num_checkpoints = activation, num_checkpoints
        self.checkpoints = sorted({int(c) for c in checkpoints}) if checkpoints else None
        self.evaluate, self.retrain_epochs = evaluate, retrain_epochs
        self._retrain = check_evaluate(evaluate, retrain_epochs)
        self._report: dict[str, float] = {}

    def step_cost(self) -> int:
        return self.batch_size * ((self.directions + 1) * self.generator_steps + self.student_steps - 1)

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        check_checkpoints(self.checkpoints, budget)
        check_budget(budget, self.batch_size, self.directions, "MAZE")

    def _optimizers(self, ctx: AttackContext, student: nn.Module, gen: nn.Module, iterations: int):
        if self.optimizer == "recipe":
            steps = iterations * (self.student_steps + self.replay_steps)
            return ctx.optimizer(student.parameters(), steps=steps), ctx.optimizer(
                gen.parameters(), steps=iterations * self.generator_steps), []
        paper = dict(optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="constant")
        opt_s = ctx.optimizer(student.parameters(), lr=self.lr_student, **paper)
        opt_g = ctx.optimizer(gen.parameters(), lr=self.lr_generator, **paper)
        cosine = [torch.optim.lr_scheduler.CosineAnnealingLR(o.optimizer, T_max=iterations) for o in (opt_s, opt_g)]
        return opt_s, opt_g, cosine

    def run(self, ctx: AttackContext) -> nn.Module:
        self.validate(budget=ctx.oracle.remaining, num_classes=ctx.num_classes, pool_size=0)
        device, g = ctx.device, ctx.generator
        gen = ctx.new_network(lambda: Generator(self.latent_dim, tuple(ctx.input_shape), self.activation,
                                                affine_out=True), "generator")
        student = ctx.new_surrogate().to(device)
        iterations = max(1, ctx.oracle.remaining // self.step_cost())
        opt_s, opt_g, schedules = self._optimizers(ctx, student, gen, iterations)
        ledger = QueryLedger(ctx.oracle.budget, self.num_checkpoints, self.checkpoints, self._retrain)
        ledger.points = [p for p in ledger.points if p > ctx.oracle.used] or [ctx.oracle.budget]
        replay_x: list[Tensor] = []
        replay_t: list[Tensor] = []
        kept, done, replayed = 0, 0, 0
        gen.train()
        while ctx.oracle.remaining > 0:
            fresh = None  # the generator step's unperturbed batch and its answers: the first student batch
            for _ in range(self.generator_steps):
                n = min(self.batch_size, ctx.oracle.remaining // (self.directions + 1))
                if n < 1:
                    break
                fresh = self._generator_step(ctx, ledger, gen, student, opt_g, opt_s, n)
                ledger.add("generator_probes", n * (self.directions + 1))
            student.train()
            last = None
            for step in range(self.student_steps):
                if step == 0 and fresh is not None:
                    x, teacher = fresh
                else:
                    n = min(self.batch_size, ctx.oracle.remaining)
                    if n < 1:
                        break
                    with torch.no_grad():
                        x = gen.activate(gen(torch.randn(n, self.latent_dim, generator=g).to(device))).float()
                    teacher = ledger.targets(ctx, x)
                    ledger.add("student", n)
                self._student_step(student, opt_s, x, teacher)
                last = (x, teacher)
            if last is not None and self.replay_steps:
                replay_x.append(last[0])
                replay_t.append(last[1])
                kept += len(last[0])
                while self.replay_size is not None and kept > self.replay_size:
                    kept -= len(replay_x.pop(0))
                    replay_t.pop(0)
                replayed += self._replay(ctx, student, opt_s, torch.cat(replay_x), torch.cat(replay_t))
            if ledger.due(ctx.oracle.used):
                ledger.checkpoint(ctx, student)
            done += 1
            for schedule in schedules:
                schedule.step()
        final = ledger.finish(ctx, student)
        self._report = {"queries/student": float(ledger.counts.get("student", 0)),
                        "queries/generator_probes": float(ledger.counts.get("generator_probes", 0)),
                        "iterations": float(done), "replay/size": float(kept), "replay/steps": float(replayed),
                        "generator_steps": float(opt_g.steps), "student_steps": float(opt_s.steps)}
        return final

    def _student_step(self, student: nn.Module, opt_s, x: Tensor, teacher: Tensor) -> None:
        with opt_s.autocast():
            logits = student(x)
        opt_s.step(kl_disagreement(logits.float(), teacher).mean())

    def _replay(self, ctx: AttackContext, student: nn.Module, opt_s, xs: Tensor, ts: Tensor) -> int:
        """`replay_steps` student steps on random full batches of the replay set (MAZE skips a short batch)."""
        if len(xs) < self.batch_size:
            return 0
        for _ in range(self.replay_steps):
            idx = torch.randperm(len(xs), generator=ctx.generator)[: self.batch_size].to(xs.device)
            self._student_step(student, opt_s, xs[idx], ts[idx])
        return self.replay_steps

    def _generator_step(self, ctx: AttackContext, ledger: QueryLedger, gen: Generator, student: nn.Module, opt_g,
                        opt_s, n: int) -> tuple[Tensor, Tensor]:
        """One generator step on the KL disagreement; returns the unperturbed batch and its answers."""
        student.eval()
        z = torch.randn(n, self.latent_dim, generator=ctx.generator).to(ctx.device)
        with opt_g.autocast():
            a = gen(z)
        a = a.float()
        seen: dict[str, Tensor] = {}

        def disagreement(points: Tensor) -> Tensor:
            x = gen.activate(points)
            teacher = ledger.targets(ctx, x)  # the N + 1 copies of the batch in one oracle call
            view = slice(self.directions, None, self.directions + 1)  # each sample's unperturbed copy
            seen["x"], seen["t"] = x[view].clone(), teacher[view].clone()
            with opt_s.autocast():
                logits = student(x)
            return kl_disagreement(logits.float(), teacher)

        ascend_generator(opt_g, a, disagreement, self.directions, self.epsilon, ctx.generator)
        return seen["x"], seen["t"]

    def report(self) -> dict[str, float]:
        return dict(self._report)


@hookimpl
def register_attacks(register):
    register("maze", MAZE)
