"""A synthetic-shapes proxy set: random rectangles, ellipses and rings on random backgrounds, drawn in one batch.

DFMS (Sanyal et al. 2022) trains its GAN on a proxy set that shares no classes with the victim; the paper also
reports a synthetic proxy of simple shapes. This is a small generator of such images, every draw from the
caller's `torch.Generator` (no per-sample Python loop: each shape is a mask over coordinate grids).
"""

from __future__ import annotations

import torch
from torch import Tensor


def synthetic_shapes(n: int, input_shape: tuple[int, int, int], generator: torch.Generator,
                     shapes_per_image: int = 3) -> Tensor:
    """(n, C, H, W) images in [0, 1]: a random background level (per channel) and `shapes_per_image` shapes, each
    a rectangle, an ellipse or a ring with a random centre, size, rotation-free aspect and colour, painted in
    order (later shapes cover earlier ones). Drawn on the CPU from `generator`."""
    channels, height, width = input_shape
    k = shapes_per_image
    ys = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(-1, 1, width).view(1, 1, 1, width)

    def u(*size: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        return low + (high - low) * torch.rand(*size, generator=generator)

    kind = torch.randint(0, 3, (n, k, 1, 1), generator=generator)
    cy, cx = u(n, k, 1, 1, low=-0.7, high=0.7), u(n, k, 1, 1, low=-0.7, high=0.7)
    hy, hx = u(n, k, 1, 1, low=0.15, high=0.7), u(n, k, 1, 1, low=0.15, high=0.7)
    colour = u(n, k, channels)
    background = u(n, 1, channels) * 0.5
    dy, dx = (ys - cy) / hy, (xs - cx) / hx  # (n, k, H, W)
    rect = (dy.abs() <= 1) & (dx.abs() <= 1)
    radius = dy ** 2 + dx ** 2
    ellipse = radius <= 1
    ring = ellipse & (radius >= 0.45)
    mask = torch.where(kind == 0, rect, torch.where(kind == 1, ellipse, ring)).float()  # (n, k, H, W)
    image = background.view(n, channels, 1, 1).expand(n, channels, height, width).clone()
    for j in range(k):  # over shapes (a handful), not samples
        m = mask[:, j].unsqueeze(1)
        image = image * (1 - m) + colour[:, j].view(n, channels, 1, 1) * m
    return image.clamp(0, 1)


__all__ = ["synthetic_shapes"]
