"""MNIST and Fashion-MNIST through torchvision, loaded once as tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .. import hookimpl
from ..errors import DataNotFoundError
from .base import ImageDataset


class _TorchvisionGrey28(ImageDataset):
    torchvision_name: str = ""
    num_classes = 10
    input_shape = (1, 28, 28)

    def __init__(self, root: str = "data", download: bool = False, pool_fraction: float = 0.5,
                 victim_train_size: int | None = None, split_seed: int = 0, holdout_fraction: float = 0.1) -> None:
        super().__init__(pool_fraction=pool_fraction, victim_train_size=victim_train_size, split_seed=split_seed,
                         holdout_fraction=holdout_fraction)
        self.root = root
        self.download = download

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        import torchvision.datasets as tvd  # lazy: keeps `stealbench list` fast

        cls = getattr(tvd, self.torchvision_name)
        try:
            train = cls(self.root, train=True, download=self.download)
            test = cls(self.root, train=False, download=self.download)
        except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True ..."
            where = Path(self.root).resolve()
            raise DataNotFoundError(
                f"{self.torchvision_name} not found under {where} (expected {where / self.torchvision_name / 'raw'}). "
                f"Pass --data.root pointing at the folder that holds {self.torchvision_name}/ "
                f"(e.g. --data.root ../shared/data), or --data.download true on a machine with internet."
            ) from exc
        # .data is the whole uint8 tensor: no per-item PIL decoding
        return (train.data.unsqueeze(1).float() / 255.0, train.targets.long(),
                test.data.unsqueeze(1).float() / 255.0, test.targets.long())

    def config(self) -> dict:
        return {**super().config(), "root": self.root, "download": self.download}


class MNIST(_TorchvisionGrey28):
    """MNIST handwritten digits, 28x28 grey, 60k train / 10k test (torchvision)."""

    registry_key = "mnist"
    torchvision_name = "MNIST"
    mean = (0.1307,)
    std = (0.3081,)


class FashionMNIST(_TorchvisionGrey28):
    """Fashion-MNIST clothing images, 28x28 grey, 60k train / 10k test (torchvision)."""

    registry_key = "fashion-mnist"
    torchvision_name = "FashionMNIST"
    mean = (0.2860,)
    std = (0.3530,)


@hookimpl
def register_datasets(register):
    register("mnist", MNIST)
    register("fashion-mnist", FashionMNIST)
