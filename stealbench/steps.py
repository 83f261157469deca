"""Step-level training for attacks that run their own game (DFME, MAZE): optimisers from the run's recipe.

`ctx.train` is one Lightning fit per call, the right tool for "train a surrogate on this transfer set"; a
generator/student game takes one optimiser step at a time, interleaved with queries. `StepOptimizer` is that
step: built from the run's surrogate recipe (optimiser, lr, weight decay, momentum, schedule), on the run's device
and precision (`--trainer.precision` 32-true, bf16-mixed, 16-mixed with a loss scaler). It draws nothing random,
so a game stepped with it is a function of the run seed (its draws come from ``ctx.generator``).
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .recipes import Recipe, get_recipe

#: the --trainer.precision values a step-level game supports (autocast dtype, or None for full float32)
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16,
                                             "16-mixed": torch.float16}
#: recipe fields an attack may override per optimiser (`ctx.optimizer(params, lr=0.1, optimizer="sgd")`)
OVERRIDABLE = ("optimizer", "lr", "weight_decay", "momentum", "nesterov", "schedule")


def check_precision(precision: Any) -> str:
    text = "32-true" if precision is None else str(precision)
    if text not in PRECISIONS:
        raise ConfigError(f"step-level training (ctx.optimizer, used by data-free attacks) supports "
                          f"--trainer.precision {', '.join(PRECISIONS)}; got {text!r}")
    return text


def build_optimizer(recipe: Recipe, params: Iterable[nn.Parameter], *, half: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimiser over `params` (`half`: float16 parameters, where Adam's eps 1e-8 rounds to 0)."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    adam = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, eps=1e-4 if half else 1e-8)


def build_schedule(recipe: Recipe, optimizer: torch.optim.Optimizer, steps: int | None):
    """The recipe's schedule over `steps` optimiser steps (None for `constant`)."""
    if recipe.schedule == "constant":
        return None
    if steps is None or steps < 1:
        raise ConfigError(f"the {recipe.schedule} schedule needs the number of optimiser steps: "
                          "ctx.optimizer(params, steps=N)")
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)


def with_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ConfigError(f"ctx.optimizer: unknown recipe field(s) {', '.join(unknown)} "
                          f"(known: {', '.join(OVERRIDABLE)})")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("optimizer", recipe.optimizer) not in ("adam", "adamw", "sgd"):
        raise ConfigError(f"ctx.optimizer: optimizer must be adam, adamw or sgd, got {changes['optimizer']!r}")
    if changes.get("schedule", recipe.schedule) not in ("constant", "cosine", "onecycle"):
        raise ConfigError(f"ctx.optimizer: schedule must be constant, cosine or onecycle, got {changes['schedule']!r}")
    known = {f.name for f in fields(Recipe)}
    return replace(recipe, **{k: v for k, v in changes.items() if k in known})


class StepOptimizer:
    """One optimiser of the run's recipe, stepped by hand: ``step(loss)`` is zero_grad, backward (scaled under
    16-mixed), optimiser step and schedule step. ``optimizer`` is the torch optimiser (an attack may hang its own
    schedule on it); ``autocast()`` is the forward pass's precision context."""

    def __init__(self, params: Iterable[nn.Parameter], recipe: Recipe, *, device: torch.device,
                 precision: str = "32-true", steps: int | None = None) -> None:
        self.recipe = recipe
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.optimizer = build_optimizer(recipe, list(params))
        self.schedule = build_schedule(recipe, self.optimizer, steps)
        self.total = steps  # the schedule's length: it holds its last value past it (OneCycleLR would raise)
        fp16 = PRECISIONS[self.precision] is torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.steps = 0

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor | None = None, *, tensor: Tensor | None = None,
                 grad: Tensor | None = None) -> None:
        """Accumulate gradients: of `loss`, or ``tensor.backward(grad)`` (a gradient estimated outside autograd,
        e.g. the zeroth-order estimate with respect to a generator's output)."""
        if loss is not None:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        else:
            scale = self.scaler.get_scale() if self.scaler is not None else 1.0
            tensor.backward(grad * scale)

    def apply(self) -> None:
        """Optimiser step (and schedule step) on the accumulated gradients, then zero them."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.schedule is not None and (self.total is None or self.steps + 1 < self.total):
            self.schedule.step()
        self.steps += 1
        self.zero_grad()

    def step(self, loss: Tensor) -> None:
        """zero_grad, backward(loss), apply."""
        self.zero_grad()
        self.backward(loss)
        self.apply()


def make_optimizer_factory(recipe: Recipe | str, device: torch.device, precision: Any = None):
    """``ctx.optimizer(params, *, steps=None, **overrides) -> StepOptimizer`` for a run of this recipe/device."""
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe  # precision: checked when an attack asks

    def optimizer(params: Iterable[nn.Parameter], *, steps: int | None = None, **overrides: Any) -> StepOptimizer:
        return StepOptimizer(params, with_overrides(base, overrides), device=device, precision=precision,
                             steps=steps)

    return optimizer


__all__ = ["OVERRIDABLE", "PRECISIONS", "StepOptimizer", "build_optimizer", "build_schedule", "check_precision",
           "make_optimizer_factory"]
