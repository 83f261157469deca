"""Build a classifier that takes pixel-space images: normalisation lives inside the model."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def build_net(arch: str, *, num_classes: int, input_shape: tuple[int, int, int], mean: Sequence[float],
              std: Sequence[float], catalog=None, pretrained: bool = False) -> nn.Module:
    """`Normalize -> arch` for registry key or timm name `arch`; raises UnknownKeyError with close matches.

    `pretrained`: start from the architecture's pretrained weights (timm models; a factory offers them as its
    ``pretrained`` attribute). RGB inputs are then normalised with the statistics the weights were trained with.
    """
    if catalog is None:
        from ..plugins import get_catalog

        catalog = get_catalog()
    factory = catalog.architectures.get(arch)
    in_chans, height, _ = input_shape
    if not pretrained:
        return nn.Sequential(Normalize(mean, std), factory(num_classes, in_chans, height))
    make_pretrained = getattr(factory, "pretrained", None)
    if make_pretrained is None:
        raise ConfigError(f"--surrogate.pretrained: architecture {arch!r} has no pretrained weights; use a timm "
                          "model (e.g. resnet18, mobilenetv3_small_050) or --surrogate.pretrained false")
    net = make_pretrained(num_classes, in_chans, height)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if in_chans == 3 and len(cfg.get("mean", ())) == 3:
        mean, std = cfg["mean"], cfg["std"]
    return nn.Sequential(Normalize(mean, std), net)
