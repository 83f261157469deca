"""DFME: Data-Free Model Extraction (Truong, Maini, Walls & Papernot, CVPR 2021).

No natural data: a generator makes the queries from noise. Each iteration takes `generator_steps` (n_G) steps of
the generator, which maximises the student-teacher L1 disagreement with its gradient through the black box
estimated by forward differences along `directions` (m) random unit directions, and `student_steps` (n_S) steps
of the student, which minimises the L1 between its logits and the logits recovered from the released
probabilities (log-probabilities minus their mean). Every probe, the m perturbed copies included, is a counted
query; the m + 1 copies of a batch go to the oracle in one call.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .. import hookimpl
from ..errors import ConfigError
from .base import Attack, AttackContext
from .data_free import (Generator, QueryLedger, ascend_generator, check_budget, check_checkpoints, check_common,
                        check_evaluate, l1_disagreement, recover_logits)


class DFME(Attack):
    """DFME (Truong et al. 2021): generator vs student, L1 on recovered logits, zeroth-order generator gradient."""

    needs_pool = False

    def __init__(self, batch_size: int = 256, latent_dim: int = 256, directions: int = 1, epsilon: float = 1e-3,
                 generator_steps: int = 1, student_steps: int = 5, lr_student: float = 0.1,
                 lr_generator: float = 1e-4, student_optimizer: Literal["paper", "recipe"] = "paper",
                 lr_schedule: Literal["paper", "constant"] = "paper", activation: Literal["tanh", "sigmoid"] = "tanh",
                 logit_correction: Literal["mean", "none"] = "mean", update_generator: bool = True,
                 num_checkpoints: int = 8, checkpoints: list[int] | None = None,
                 evaluate: Literal["student", "retrain"] = "student", retrain_epochs: int = 10) -> None:
        """
        Args:
            batch_size: images per generator and per student step (the paper: 256).
            latent_dim: size of the generator's noise (the paper: 256).
            directions: m, random directions of the forward-difference estimate (the paper's default: 1); a
                generator step costs (m + 1) x batch_size queries.
            epsilon: the forward-difference step, in the generator's pre-activation space (the paper: 1e-3).
            generator_steps: n_G, generator steps per iteration (the paper: 1).
            student_steps: n_S, student steps per iteration (the paper: 5).
            lr_student: the student's learning rate (the paper: SGD 0.1, momentum 0.9, weight decay 5e-4).
            lr_generator: the generator's Adam learning rate (the paper: 1e-4).
            student_optimizer: `paper` (SGD as above) or `recipe`: the run's surrogate recipe as it is
                (--surrogate.recipe / lr; lr_student is then unused), a deviation.
            lr_schedule: `paper`: both learning rates x0.3 after 10%, 30% and 50% of the iterations (DFME's
                MultiStepLR; the student's only with student_optimizer paper); `constant`: none (a deviation).
            activation: the generator's output in pixel space [0, 1]: `tanh` ((tanh + 1) / 2: the paper's tanh,
                rescaled from [-1, 1]) or `sigmoid`.
            logit_correction: `mean` (the paper's logit recovery: log-probabilities minus their mean) or `none`
                (log-probabilities as they are), a deviation.
            update_generator: False never trains the generator and spends the budget on student steps on its
                initial (random) generator's images: an ablation, not DFME.
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
        for option, value, allowed in (("student_optimizer", student_optimizer, ("paper", "recipe")),
                                       ("lr_schedule", lr_schedule, ("paper", "constant")),
                                       ("logit_correction", logit_correction, ("mean", "none"))):
            if value not in allowed:
                raise ConfigError(f"attack.{option} must be {' or '.join(allowed)}, got {value!r}")
        self.batch_size, self.latent_dim, self.directions, self.epsilon = batch_size, latent_dim, directions, epsilon
        self.generator_steps, self.student_steps = generator_steps, student_steps
        self.lr_student, self.lr_generator = lr_student, lr_generator
        self.student_optimizer, self.lr_schedule, self.activation = student_optimizer, lr_schedule, activation
        self.logit_correction, self.update_generator = logit_correction, bool(update_generator)
        self.num_checkpoints = num_checkpoints
        self.checkpoints = sorted({int(c) for c in checkpoints}) if checkpoints else None
        self.evaluate, self.retrain_epochs = evaluate, retrain_epochs
        self._retrain = check_evaluate(evaluate, retrain_epochs)
        self._report: dict[str, float] = {}

    def step_cost(self) -> int:
        """Queries of one full iteration."""
        probes = self.generator_steps * (self.directions + 1) * self.batch_size if self.update_generator else 0
        return probes + self.student_steps * self.batch_size

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        check_checkpoints(self.checkpoints, budget)
        if self.update_generator:
            check_budget(budget, self.batch_size, self.directions, "DFME", student_batches=1)

    def _teacher(self, ctx: AttackContext, ledger: QueryLedger, x: torch.Tensor) -> torch.Tensor:
        targets = ledger.targets(ctx, x)
        if self.logit_correction == "mean":
            return recover_logits(targets)
        return targets.clamp_min(1e-30).log()

    def run(self, ctx: AttackContext) -> nn.Module:
        self.validate(budget=ctx.oracle.remaining, num_classes=ctx.num_classes, pool_size=0)
        device, g = ctx.device, ctx.generator
        shape = tuple(ctx.input_shape)
        gen = ctx.new_network(lambda: Generator(self.latent_dim, shape, self.activation), "generator")
        student = ctx.new_surrogate().to(device)
        if self.student_optimizer == "paper":
            opt_s = ctx.optimizer(student.parameters(), optimizer="sgd", lr=self.lr_student, momentum=0.9,
                                  nesterov=False, weight_decay=5e-4, schedule="constant")
        else:
            opt_s = ctx.optimizer(student.parameters(),
                                  steps=max(1, ctx.oracle.remaining // self.batch_size))
        opt_g = ctx.optimizer(gen.parameters(), optimizer="adam", lr=self.lr_generator, weight_decay=0.0,
                              schedule="constant")
        iterations = max(1, ctx.oracle.remaining // self.step_cost())
        schedules = []
        if self.lr_schedule == "paper":
            milestones = sorted({max(1, int(iterations * f)) for f in (0.1, 0.3, 0.5)})
            mine = ([opt_g] if self.update_generator else []) + ([opt_s] if self.student_optimizer == "paper" else [])
            schedules = [torch.optim.lr_scheduler.MultiStepLR(o.optimizer, milestones, gamma=0.3) for o in mine]
        ledger = QueryLedger(ctx.oracle.budget, self.num_checkpoints, self.checkpoints, self._retrain)
        ledger.points = [p for p in ledger.points if p > ctx.oracle.used] or [ctx.oracle.budget]
        done = 0
        gen.train()
        while ctx.oracle.remaining > 0:
            for _ in range(self.generator_steps if self.update_generator else 0):
                # the probes leave at least one student batch of their size: queries after the last student
                # step would improve only the generator
                n = min(self.batch_size, ctx.oracle.remaining // (self.directions + 2))
                if n < 1:
                    break
                self._generator_step(ctx, ledger, gen, student, opt_g, opt_s, n)
                ledger.add("generator_probes", n * (self.directions + 1))
            student.train()
            for _ in range(self.student_steps):
                n = min(self.batch_size, ctx.oracle.remaining)
                if n < 1:
                    break
                with torch.no_grad():
                    x = gen.activate(gen(torch.randn(n, self.latent_dim, generator=g).to(device))).float()
                teacher = self._teacher(ctx, ledger, x)
                with opt_s.autocast():
                    logits = student(x)
                opt_s.step(l1_disagreement(logits.float(), teacher).mean())
                ledger.add("student", n)
                if ledger.due(ctx.oracle.used):
                    ledger.checkpoint(ctx, student)
                    student.train()
            done += 1
            for schedule in schedules:
                schedule.step()
        final = ledger.finish(ctx, student)
        self._report = {"queries/student": float(ledger.counts.get("student", 0)),
                        "queries/generator_probes": float(ledger.counts.get("generator_probes", 0)),
                        "iterations": float(done), "generator_steps": float(opt_g.steps),
                        "student_steps": float(opt_s.steps)}
        return final

    def _generator_step(self, ctx: AttackContext, ledger: QueryLedger, gen: Generator, student: nn.Module, opt_g,
                        opt_s, n: int) -> None:
        """One generator step: maximise the L1 disagreement, its gradient estimated through the oracle."""
        student.eval()
        z = torch.randn(n, self.latent_dim, generator=ctx.generator).to(ctx.device)
        with opt_g.autocast():
            a = gen(z)
        a = a.float()

        def disagreement(points: torch.Tensor) -> torch.Tensor:
            x = gen.activate(points)
            teacher = self._teacher(ctx, ledger, x)  # the m + 1 copies of the batch in one oracle call
            with opt_s.autocast():
                logits = student(x)
            return l1_disagreement(logits.float(), teacher)

        ascend_generator(opt_g, a, disagreement, self.directions, self.epsilon, ctx.generator)

    def report(self) -> dict[str, float]:
        return dict(self._report)


@hookimpl
def register_attacks(register):
    register("dfme", DFME)
