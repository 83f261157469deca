"""scikit-learn's bundled 8x8 handwritten digits: real data, no download."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import hookimpl
from .base import ImageDataset, stratified_split


class Digits(ImageDataset):
    """scikit-learn digits: 1,797 8x8 grey images, 10 classes (embedded; no download)."""

    registry_key = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    mean = (0.3051,)
    std = (0.3763,)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.int64)
        # digits has no official split: a fixed, stratified half/half "train"/"test" partition
        train, test = stratified_split(y, 0.5, torch.Generator().manual_seed(0))
        return x[train], y[train], x[test], y[test]


@hookimpl
def register_datasets(register):
    register("digits", Digits)
