"""Colour data sets in torchvision's on-disk layouts: CIFAR-10/100, SVHN, GTSRB, STL-10.

Each is read straight from its files into one uint8 array and converted to float32 (N, 3, H, W) in [0, 1] in
one vectorised step. torchvision is used only to download (`--data.download true`); reading the files here
skips torchvision's md5 pass over every file at every load and its per-item PIL path. GTSRB's images differ in
size: they are decoded once and resized to 32x32 at load (the common choice in model-stealing papers).
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import hookimpl
from ..errors import ConfigError, DataNotFoundError
from .base import StoredDataset


def to_float(images: np.ndarray) -> Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], one vectorised conversion."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


class _ColourSet(StoredDataset):
    """A torchvision colour set under --data.root; subclasses name their files and read them."""

    torchvision_name: str = ""
    #: what to fetch on a machine with internet (for the error message)
    source_url: str = ""
    #: see augment.py: what training-time augmentation keeps this set's labels valid
    augment = "crop-flip"

    def required_files(self, root: Path) -> list[Path]:
        raise NotImplementedError

    def read(self, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        """Download with torchvision (both splits)."""
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_name)
        for split in self.torchvision_splits():
            cls(str(root), download=True, **split)

    def torchvision_splits(self) -> list[dict]:
        return [{"train": True}, {"train": False}]

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        root = Path(self.root).expanduser().resolve()
        missing = [p for p in self.required_files(root) if not p.exists()]
        if missing and self.download:
            self.fetch(root)
            missing = [p for p in self.required_files(root) if not p.exists()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:4]) + (f" (+{len(missing) - 4} more)" if len(missing) > 4
                                                              else "")
            raise DataNotFoundError(
                f"{self.key} not found under --data.root {str(root)!r}: missing {shown}. Pass --data.root pointing "
                f"at the folder that holds them, or --data.download true on a machine with internet (fetches "
                f"{self.source_url}), then copy that folder here."
            )
        return self.read(root)

    def config(self) -> dict:
        return {**super().config(), "root": self.root, "download": self.download}


class CIFAR10(_ColourSet):
    """CIFAR-10: 32x32 colour images, 10 classes, 50k train / 10k test (torchvision layout)."""

    registry_key = "cifar10"
    torchvision_name = "CIFAR10"
    source_url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    num_classes = 10
    input_shape = (3, 32, 32)
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def required_files(self, root: Path) -> list[Path]:
        return [root / self.folder / name for name in (*self.train_files, *self.test_files)]

    def _batches(self, root: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for name in names:
            with open(root / self.folder / name, "rb") as f:
                # the official python-version batches are pickles: {"data": (N, 3072) uint8, "labels": [...]}
                entry = pickle.load(f, encoding="latin1")
            images.append(entry["data"])
            labels += entry[self.label_key]
        x = np.concatenate(images).reshape(-1, 3, 32, 32)  # stored channel-major: already (N, C, H, W)
        return to_float(x), torch.tensor(labels, dtype=torch.int64)

    def read(self, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (*self._batches(root, self.train_files), *self._batches(root, self.test_files))


class CIFAR100(CIFAR10):
    """CIFAR-100: 32x32 colour images, 100 fine classes, 50k train / 10k test (torchvision layout)."""

    registry_key = "cifar100"
    torchvision_name = "CIFAR100"
    source_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


class SVHN(_ColourSet):
    """SVHN house-number digits: 32x32 colour, 10 classes, 73k train / 26k test (torchvision .mat files)."""

    registry_key = "svhn"
    torchvision_name = "SVHN"
    source_url = "http://ufldl.stanford.edu/housenumbers/{train,test}_32x32.mat"
    augment = "crop"  # digits: no mirroring
    num_classes = 10
    input_shape = (3, 32, 32)
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)

    def required_files(self, root: Path) -> list[Path]:
        return [root / "train_32x32.mat", root / "test_32x32.mat"]

    def torchvision_splits(self) -> list[dict]:
        return [{"split": "train"}, {"split": "test"}]

    def read(self, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        try:
            import scipy.io
        except ImportError as exc:
            raise ConfigError("svhn: reading its .mat files needs scipy (pip install scipy)") from exc
        out = []
        for name in ("train_32x32.mat", "test_32x32.mat"):
            mat = scipy.io.loadmat(str(root / name))
            x = mat["X"].transpose(3, 2, 0, 1)  # stored (H, W, C, N)
            y = mat["y"].astype(np.int64).reshape(-1)
            y[y == 10] = 0  # SVHN labels the digit 0 as class 10
            out += [to_float(x), torch.from_numpy(y)]
        return tuple(out)  # type: ignore[return-value]


class GTSRB(_ColourSet):
    """GTSRB traffic signs: 43 classes, 39k train / 12.6k test, resized to 32x32 at load (torchvision layout)."""

    registry_key = "gtsrb"
    torchvision_name = "GTSRB"
    source_url = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ (3 zip files)"
    augment = "crop"  # mirroring turns "keep left" into "keep right"
    image_size = 32
    num_classes = 43
    input_shape = (3, 32, 32)
    mean = (0.3403, 0.3121, 0.3214)
    std = (0.2724, 0.2608, 0.2669)

    def required_files(self, root: Path) -> list[Path]:
        base = root / "gtsrb"
        return [base / "GTSRB" / "Training", base / "GTSRB" / "Final_Test" / "Images", base / "GT-final_test.csv"]

    def torchvision_splits(self) -> list[dict]:
        return [{"split": "train"}, {"split": "test"}]

    def read(self, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from .imagefolder import decode_images

        training, test_dir, labels_csv = self.required_files(root)
        # training: one folder per class, named by its class id (00000 ... 00042), .ppm images
        train_paths, train_y = [], []
        for folder in sorted(p for p in training.iterdir() if p.is_dir()):
            files = sorted(folder.glob("*.ppm"))
            train_paths += files
            train_y += [int(folder.name)] * len(files)
        with open(labels_csv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
        test_paths = [test_dir / row["Filename"] for row in rows]
        test_y = [int(row["ClassId"]) for row in rows]
        size = (self.image_size, self.image_size)
        train_x = decode_images(train_paths, channels=3, size=size, what=f"gtsrb {training}")
        test_x = decode_images(test_paths, channels=3, size=size, what=f"gtsrb {test_dir}")
        return train_x, torch.tensor(train_y), test_x, torch.tensor(test_y)


class STL10(_ColourSet):
    """STL-10: 96x96 colour images, 10 classes, 5k labelled train / 8k test (torchvision binary files)."""

    registry_key = "stl10"
    torchvision_name = "STL10"
    source_url = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
    folder = "stl10_binary"
    num_classes = 10
    input_shape = (3, 96, 96)
    mean = (0.4467, 0.4398, 0.4066)
    std = (0.2603, 0.2566, 0.2713)

    def required_files(self, root: Path) -> list[Path]:
        return [root / self.folder / name for name in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")]

    def torchvision_splits(self) -> list[dict]:
        return [{"split": "train"}, {"split": "test"}]

    def read(self, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = []
        for split in ("train", "test"):
            raw = np.fromfile(root / self.folder / f"{split}_X.bin", dtype=np.uint8)
            y = np.fromfile(root / self.folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
            if raw.size != len(y) * 3 * 96 * 96:
                raise DataNotFoundError(f"stl10: {split}_X.bin holds {raw.size} bytes, not {len(y)} images of "
                                        f"3x96x96 for the labels in {split}_y.bin, under {root / self.folder}; "
                                        "the files are incomplete: download them again")
            x = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major per channel
            out += [to_float(x), torch.from_numpy(y)]
        return tuple(out)  # type: ignore[return-value]


@hookimpl
def register_datasets(register):
    register("cifar10", CIFAR10)
    register("cifar100", CIFAR100)
    register("svhn", SVHN)
    register("gtsrb", GTSRB)
    register("stl10", STL10)
