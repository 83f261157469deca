"""Rounded release: probabilities to d decimals, still summing to 1."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import hookimpl
from ..errors import ConfigError
from .base import Defense


def round_on_simplex(probs: Tensor, decimals: int) -> Tensor:
    """Round every row to `decimals` decimals so that it still sums to exactly 1 (largest-remainder method).

    Each entry is floored to the grid 10^-d, then the missing grid units go to the entries with the largest
    remainders. Every released value is a multiple of 10^-d and differs from the clean one by less than 10^-d.
    """
    scale = 10.0 ** decimals
    y = probs.double().clamp(0.0, 1.0)
    y = y / y.sum(-1, keepdim=True)
    scaled = y * scale
    units = torch.floor(scaled)
    remainder = scaled - units
    missing = (scale - units.sum(-1, keepdim=True)).round().long()  # in [0, K-1]
    order = remainder.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(y.shape[-1], device=y.device).expand_as(order))
    units = units + (rank < missing).double()
    return (units / scale).to(probs.dtype)


class Rounding(Defense):
    """Round each released probability to d decimals (largest-remainder rounding keeps rows on the simplex)."""

    # Ties created by rounding (e.g. 0.5 / 0.5) can change which index argmax reports.
    preserves_argmax = False

    def __init__(self, decimals: int = 2) -> None:
        """
        Args:
            decimals: number of decimals kept (0 releases a one-hot vector, 2 multiples of 0.01, ...).
        """
        super().__init__()
        if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 12:
            raise ConfigError(f"defense.decimals must be an integer in [0, 12], got {decimals!r}")
        self.decimals = decimals

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if probs.shape[-1] == 1:
            return torch.round(probs.double(), decimals=self.decimals).to(probs.dtype)
        return round_on_simplex(probs, self.decimals)


@hookimpl
def register_defenses(register):
    register("rounding", Rounding)
