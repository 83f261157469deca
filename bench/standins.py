"""Stand-in data sets for benchmarks on machines without the real one (use by class path: `--data standins.NAME`
with bench/ on PYTHONPATH).

FashionMNIST32RGB: Fashion-MNIST resized to 32x32 (bilinear, one batched op) in three equal channels, the input
shape of CIFAR-10, so CIFAR nets and recipes run unchanged. Its numbers are not CIFAR-10's: it only exercises
the same code paths and costs (10 classes, 60k/10k images, 3x32x32).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from stealbench.data.torchvision_sets import FashionMNIST


def _rgb32(x: Tensor) -> Tensor:
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0, 1).expand(
        -1, 3, -1, -1).contiguous()


class FashionMNIST32RGB(FashionMNIST):
    """Fashion-MNIST at 32x32 in three channels: a CIFAR-10-shaped stand-in."""

    input_shape = (3, 32, 32)
    mean = (0.2860,) * 3
    std = (0.3530,) * 3
    augment = "crop-flip"  # what the CIFAR recipes' augmentation does to CIFAR-10

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        train_x, train_y, test_x, test_y = super().load()
        return _rgb32(train_x), train_y, _rgb32(test_x), test_y
