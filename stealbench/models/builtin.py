"""Small built-in nets for 8x8, 28x28 and 32x32 inputs; they train in seconds on a CPU."""

from __future__ import annotations

from torch import nn

from .. import hookimpl


def mlp(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Two-hidden-layer perceptron (256, 128)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * image_size * image_size, 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def cnn(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Two conv layers (32-64), one pooling step and a 4x4 adaptive pool; any input >= 8x8, cheap on a CPU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 16, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def lenet5(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """LeNet-5 style net for 28x28 / 32x32 inputs."""
    pad = 2 if image_size == 28 else 0
    flat = 16 * 5 * 5
    return nn.Sequential(
        nn.Conv2d(in_chans, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@hookimpl
def register_architectures(register):
    register("mlp", mlp)
    register("cnn", cnn)
    register("lenet5", lenet5, "LeNet-5 style net for 28x28 / 32x32 inputs.")
