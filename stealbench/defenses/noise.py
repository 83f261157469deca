"""Random perturbation of the released probabilities in logit space, within a norm budget."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .. import hookimpl
from ..errors import ConfigError
from .base import Defense, DefenseSetup

_FLOOR = 1e-12  # log(0) guard


class LogitNoise(Defense):
    """Add random noise to the log-probabilities (L2 or L-inf ball of radius eps), then re-normalise."""

    randomized = True

    def __init__(self, eps: float = 1.0, norm: Literal["l2", "linf"] = "l2", seed: int = 0) -> None:
        """
        Args:
            eps: radius of the noise ball in logit (log-probability) space.
            norm: `l2`: noise uniform in the L2 ball of radius eps; `linf`: each logit moves by U(-eps, eps).
            seed: seed of the noise generator until `setup` reseeds it from the run's seed.
        """
        super().__init__()
        if not eps >= 0:
            raise ConfigError(f"defense.eps must be >= 0 (noise radius in logit space), got {eps}")
        if norm not in ("l2", "linf"):
            raise ConfigError(f"defense.norm must be one of l2, linf; got {norm!r}")
        self.eps = float(eps)
        self.norm = norm
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def setup(self, context: DefenseSetup) -> None:
        seed = int(torch.randint(2**62, (1,), generator=context.generator))
        self._generator = torch.Generator().manual_seed(seed)

    def noise(self, shape: torch.Size) -> Tensor:
        """Noise of the given shape, each row inside the norm ball (drawn on the CPU for reproducibility)."""
        if self.norm == "linf":
            return (torch.rand(shape, generator=self._generator, dtype=torch.float64) * 2 - 1) * self.eps
        direction = torch.randn(shape, generator=self._generator, dtype=torch.float64)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # uniform in the ball: radius eps * U^(1/d)
        u = torch.rand(shape[:-1] + (1,), generator=self._generator, dtype=torch.float64)
        return direction * self.eps * u.pow(1.0 / shape[-1])

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if probs.shape[-1] == 1:  # binary: perturb the logit of p
            z = torch.logit(probs.double().clamp(_FLOOR, 1 - _FLOOR))
            delta = self.noise(probs.shape).to(probs.device)
            return torch.sigmoid(z + delta.clamp(-self.eps, self.eps)).to(probs.dtype)
        z = probs.double().clamp_min(_FLOOR).log()
        delta = self.noise(probs.shape).to(probs.device)
        return torch.softmax(z + delta, dim=-1).to(probs.dtype)


@hookimpl
def register_defenses(register):
    register("noise", LogitNoise)
