"""Build a classifier that takes pixel-space images: normalisation lives inside the model."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def build_net(arch: str, *, num_classes: int, input_shape: tuple[int, int, int], mean: Sequence[float],
              std: Sequence[float], catalog=None) -> nn.Module:
    """`Normalize -> arch` for registry key or timm name `arch`; raises UnknownKeyError with close matches."""
    if catalog is None:
        from ..plugins import get_catalog

        catalog = get_catalog()
    factory = catalog.architectures.get(arch)
    in_chans, height, _ = input_shape
    net = factory(num_classes, in_chans, height)
    return nn.Sequential(Normalize(mean, std), net)
