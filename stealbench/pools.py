"""Attacker pools from another data set than the victim's (e.g. Fashion-MNIST images against an MNIST victim).

`stealbench fit --pool_data fashion-mnist --pool_data.root ../shared/data` replaces the attacker pool of every
attack by that data set's whole training part, resized to the victim's input shape. Its labels are the pool data
set's own classes: the attacker's own knowledge (``ctx.pool_labels``; Knockoff's adaptive policy may use them),
never the victim task's. The pool is checked to share no image with the evaluation set, and a defense's extra
data (e.g. an outlier set) is checked to share none with the pool. Colour and grey sets mix freely (e.g.
CIFAR-100 or an image folder against a CIFAR-10 victim, CIFAR-10 against an MNIST victim): channels and sizes
are converted by `match_shape`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError

LUMA = torch.tensor([0.299, 0.587, 0.114])


def match_shape(x: Tensor, input_shape: tuple[int, int, int]) -> Tensor:
    """Images (N, C, H, W) in [0, 1] converted to `input_shape`: grey <-> RGB, then area/bilinear resizing."""
    channels, height, width = input_shape
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            # ITU-R 601 luma, the weights of PIL's convert("L"): a grey pool image looks like a grey photo
            x = torch.einsum("nchw,c->nhw", x, LUMA.to(x.dtype)).unsqueeze(1)
        else:
            raise ConfigError(f"pool_data: cannot convert {x.shape[1]}-channel images to the victim's {channels} "
                              "channels (only grey <-> RGB is supported)")
    if tuple(x.shape[2:]) != (height, width):
        parts = []
        for xb in x.split(4096):  # bounded memory
            smaller = height <= xb.shape[2] and width <= xb.shape[3]
            parts.append(F.interpolate(xb.float(), size=(height, width), mode="area" if smaller else "bilinear",
                                       **({} if smaller else {"align_corners": False})))
        x = torch.cat(parts)
    return x.clamp(0.0, 1.0).contiguous()


def fingerprints(x: Tensor) -> Tensor:
    """One int64 per image (a fixed random projection of its 8-bit pixels): equal images, equal prints."""
    flat = (x.reshape(len(x), -1) * 255).round().to(torch.int64)
    weights = torch.randint(1, 2**20, (flat.shape[1],), generator=torch.Generator().manual_seed(1234))
    return (flat * weights).sum(1)


def check_disjoint(pool_x: Tensor, eval_x: Tensor, what: str = "pool_data") -> None:
    """ConfigError if any pool image equals an evaluation image."""
    shared = torch.isin(fingerprints(pool_x), fingerprints(eval_x))
    if shared.any():
        raise ConfigError(f"{what}: {int(shared.sum())} attacker-pool images also appear in the evaluation set; "
                          "choose a pool data set disjoint from the victim's evaluation data")


def check_outliers_disjoint(outlier_x: Tensor, pool_x: Tensor, outlier_name: str, pool_name: str) -> None:
    """ConfigError if any image a defense would train on (`outlier_x`) is also in the attacker's pool.

    The outliers are converted to the pool's image shape first (the pool is stored at the victim's input shape,
    a data set loaded for a defense is not), so the same picture matches whatever its stored size.
    """
    if len(outlier_x) == 0 or len(pool_x) == 0:
        return
    outliers = match_shape(outlier_x, tuple(pool_x.shape[1:]))
    shared = torch.isin(fingerprints(outliers), fingerprints(pool_x))
    if shared.any():
        raise ConfigError(
            f"{outlier_name}: {int(shared.sum())} of its {len(outlier_x)} images are also in the attacker's pool "
            f"({pool_name}); a defense may not train on the attacker's data: choose another data set or part for "
            "the defense, or another pool for the attacker")


def _same_source(a, b) -> bool:
    """One data set class reading one folder (two image folders in different places are different data)."""
    def root(d):
        value = getattr(d, "root", None)
        return None if value is None else Path(value).expanduser().resolve()

    return type(a) is type(b) and root(a) == root(b)


def load_pool(pool_data, victim_data, eval_x: Tensor) -> tuple[Tensor, Tensor]:
    """(pool_x, pool_y) from `pool_data` (an ImageDataset), shaped like the victim's inputs, disjoint from eval."""
    if _same_source(pool_data, victim_data):
        raise ConfigError("pool_data is the victim's own data set; leave --pool_data unset to use its attacker "
                          "pool (the part of its test split kept apart from the evaluation set)")
    train_x, train_y, _, _ = pool_data.parts()
    x = match_shape(train_x, tuple(victim_data.input_shape))
    check_disjoint(x, eval_x)
    return x, train_y


__all__ = ["check_disjoint", "check_outliers_disjoint", "fingerprints", "load_pool", "match_shape"]
