"""Batched training-time augmentation: random crop with padding and horizontal flip, on a whole batch at once.

Runs inside the training step on the training device, with tensor ops only (no per-sample Python loop, no PIL).
Which augmentation suits a data set is the data set's choice (its ``augment`` attribute: flipping a digit or a
traffic sign changes its meaning); whether to augment at all is the recipe's (see recipes.py).
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError

#: augmentation name -> (random crop, horizontal flip)
AUGMENTATIONS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "crop": (True, False),  # digits and signs: translation keeps the class, mirroring may not
    "crop-flip": (True, True),  # natural images (CIFAR, STL-10)
}


def check_augmentation(name: str, option: str) -> str:
    if name not in AUGMENTATIONS:
        close = difflib.get_close_matches(str(name), AUGMENTATIONS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{option} {name!r} is not an augmentation; expected one of "
                          f"{', '.join(AUGMENTATIONS)}.{hint}")
    return name


def dataset_augmentation(data) -> str:
    """The augmentation a data set declares (``augment`` attribute); sets that declare none get ``none``."""
    return check_augmentation(getattr(data, "augment", "none"), f"{type(data).__name__}.augment")


def crop_padding(height: int) -> int:
    """4 pixels at 32x32 (the CIFAR convention), scaled with the image size."""
    return max(1, round(height / 8))


class BatchAugment:
    """Random crop (zero padding) and/or horizontal flip of a batch (N, C, H, W), drawn from its own generator.

    The generator lives on the batch's device and is seeded once, so a run is reproducible on a given device
    and independent of any other random stream (the attack's, the initial weights').
    """

    def __init__(self, name: str, seed: int) -> None:
        self.crop, self.flip = AUGMENTATIONS[check_augmentation(name, "augmentation")]
        self.seed = seed
        self._generator: torch.Generator | None = None

    @property
    def active(self) -> bool:
        return self.crop or self.flip

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def __call__(self, x: Tensor) -> Tensor:
        if not self.active or len(x) == 0:
            return x
        g = self._gen(x.device)
        n, _, h, w = x.shape
        if self.crop:
            pad = crop_padding(h)
            padded = F.pad(x, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
            dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
            rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)  # (N, 1, H, 1)
            cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)  # (N, 1, 1, W)
            # one gather for the whole batch: rows first, then columns, each window shifted per image
            x = padded.gather(2, rows.expand(-1, x.shape[1], -1, padded.shape[3]))
            x = x.gather(3, cols.expand(-1, x.shape[1], h, -1))
        if self.flip:
            mirror = torch.rand(n, device=x.device, generator=g) < 0.5
            x = torch.where(mirror.view(n, 1, 1, 1), x.flip(3), x)
        return x


__all__ = ["AUGMENTATIONS", "BatchAugment", "check_augmentation", "crop_padding", "dataset_augmentation"]
