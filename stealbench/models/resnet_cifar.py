"""CIFAR-style ResNets: a 3x3 stem and no max-pool, so 32x32 inputs keep their resolution in the first stage.

- ``resnet20`` / ``resnet56``: He et al. 2016 (sec. 4.2), three stages of 16/32/64 channels with n = 3 / 9 basic
  blocks each; parameter-free "option A" shortcuts (stride-2 subsampling, zero-padded channels), 0.27M / 0.85M
  parameters at 10 classes.
- ``resnet18-cifar``: the ImageNet ResNet-18 layout (64-512 channels, 2-2-2-2 blocks, 1x1 projection shortcuts)
  with the 7x7 stride-2 stem and max-pool replaced by one 3x3 stride-1 conv, as commonly trained on CIFAR (11.2M).

All end in a global average pool, so any input from 8x8 up works.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .. import hookimpl


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by `stride`, zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "pad":
                self.shortcut = PadShortcut(stride, planes - in_planes)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_chans: int,
                 shortcut: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, in_planes = [], widths[0]
        for stage, (n, planes) in enumerate(zip(blocks, widths)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016): 3x3 stem, 16/32/64 channels, 0.27M parameters."""
    return CifarResNet([3, 3, 3], [16, 32, 64], num_classes, in_chans, shortcut="pad")


def resnet56(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016): 3x3 stem, 16/32/64 channels, 0.85M parameters."""
    return CifarResNet([9, 9, 9], [16, 32, 64], num_classes, in_chans, shortcut="pad")


def resnet18_cifar(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (the usual CIFAR variant), 11.2M parameters."""
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_chans, shortcut="conv")


@hookimpl
def register_architectures(register):
    register("resnet20", resnet20)
    register("resnet56", resnet56)
    register("resnet18-cifar", resnet18_cifar)
