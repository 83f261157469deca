"""Deceptive perturbation (reverse sigmoid) of Lee, Edwards, Molloy & Su, arXiv:1806.00054."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import hookimpl
from ..errors import ConfigError
from .base import Defense

_EPS = 1e-9  # y is clipped to [eps, 1-eps] before the logit, as in the reference implementation


def reverse_sigmoid(probs: Tensor, beta: float, gamma: float) -> Tensor:
    """y' = normalise(clip(y - beta * (sigmoid(gamma * logit(y)) - 1/2), 0, 1)), row-wise.

    A single column is read as one sigmoid output p (binary classifier): it is perturbed as [1-p, p]
    and p' is returned, keeping the shape.
    """
    binary = probs.shape[-1] == 1
    y = torch.cat([1 - probs, probs], dim=-1) if binary else probs
    y64 = y.double().clamp(_EPS, 1 - _EPS)  # float64 keeps the golden vectors within 1e-6
    r = beta * (torch.sigmoid(gamma * torch.logit(y64)) - 0.5)
    released = (y64 - r).clamp(0.0, 1.0)
    released = released / released.sum(dim=-1, keepdim=True)
    released = released.to(probs.dtype)
    return released[..., 1:] if binary else released


class DeceptivePerturbation(Defense):
    """Reverse sigmoid (Lee et al. 2018): keeps the top-1 when it exceeds 1/2, poisons the gradients of soft labels."""

    def __init__(self, beta: float = 1.0, gamma: float = 0.1) -> None:
        super().__init__()
        if not beta > 0:
            raise ConfigError(f"defense.beta must be > 0 (perturbation magnitude), got {beta}")
        if not gamma > 0:
            raise ConfigError(f"defense.gamma must be > 0 (convergence parameter), got {gamma}")
        self.beta = float(beta)
        self.gamma = float(gamma)

    # With beta, gamma <= 1 the argmax is kept whenever max y > 1/2, but it can flip below 1/2.
    preserves_argmax = False

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        return reverse_sigmoid(probs, self.beta, self.gamma)


@hookimpl
def register_defenses(register):
    register("deceptive", DeceptivePerturbation)
