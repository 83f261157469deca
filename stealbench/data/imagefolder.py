"""`imagefolder`: the user's own images, in torchvision's ImageFolder layout, one folder per split.

    DIR/train/<class>/*.png|jpg|...     the victim's training part
    DIR/test/<class>/*.png|jpg|...      divided into the attacker pool and the evaluation set

Class indices follow the sorted class-folder names (as torchvision's ImageFolder numbers them); both splits must
hold the same class folders. Images are decoded once at load into float32 tensors; `image_size` resizes them
(required when they differ in size), `channels` picks grey (1) or RGB (3). Unlike the built-in sets, the number
of classes, the input shape and the normalisation statistics are per instance (read from the folder).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .. import hookimpl
from ..augment import check_augmentation
from ..errors import ConfigError, DataNotFoundError
from .base import MAX_IMAGE_SIZE, ImageDataset

#: the file types torchvision's ImageFolder accepts
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

LAYOUT_HELP = ("expected DIR/train/<class>/<images> and DIR/test/<class>/<images> (torchvision's ImageFolder "
               "layout, one folder per split, the same class folders in both)")


def decode_images(paths: Sequence[Path], *, channels: int, size: tuple[int, int] | None, what: str) -> Tensor:
    """Decode image files once into a float32 (N, C, H, W) tensor in [0, 1].

    Files are decoded by a thread pool (PIL releases the GIL while decoding) and resized with PIL when `size`
    (height, width) is given; without it all images must share one size. The uint8 -> float conversion is one
    vectorised step over the stacked array.
    """
    from PIL import Image  # lazy: keeps `stealbench list` fast

    mode = "L" if channels == 1 else "RGB"

    def read(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        with Image.open(path) as img:
            original = img.size  # (width, height)
            if size is None and max(original) > MAX_IMAGE_SIZE:  # before decoding: it would not fit in memory
                raise ConfigError(f"{what}: {path} is {original[1]}x{original[0]} pixels, more than the limit of "
                                  f"{MAX_IMAGE_SIZE}; pass --data.image_size N (at most {MAX_IMAGE_SIZE}) to resize")
            img = img.convert(mode)
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
            return np.asarray(img, dtype=np.uint8), original

    if not paths:
        return torch.empty(0, channels, *(size or (0, 0)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(read, paths))
    if size is None:
        shapes = {arr.shape[:2] for arr, _ in decoded}
        if len(shapes) > 1:
            examples = {}
            for path, (arr, _) in zip(paths, decoded):
                examples.setdefault(arr.shape[:2], path)
            listed = "; ".join(f"{p} is {h}x{w}" for (h, w), p in list(examples.items())[:3])
            raise ConfigError(f"{what}: images differ in size ({listed}); pass --data.image_size N to resize "
                              "them all to NxN at load")
    array = np.stack([arr for arr, _ in decoded])
    x = torch.from_numpy(array)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def scan_split(split_dir: Path) -> tuple[list[str], list[Path], Tensor]:
    """(class names, file paths, labels) of one ImageFolder split; sorted, so the order is reproducible."""
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [index] * len(files)
    return classes, paths, torch.tensor(labels, dtype=torch.int64)


class ImageFolder(ImageDataset):
    """Your own images: --data.root DIR with DIR/train/<class>/* and DIR/test/<class>/* (ImageFolder layout)."""

    registry_key = "imagefolder"

    def __init__(self, root: str, image_size: int | None = None, channels: int = 3, augment: str = "crop-flip",
                 pool_fraction: float = 0.5, victim_train_size: int | None = None, split_seed: int | None = None,
                 holdout_fraction: float = 0.1) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"--data.channels must be 1 (grey) or 3 (RGB), got {channels}")
        if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"--data.image_size must be between 1 and {MAX_IMAGE_SIZE} pixels (the limit, to keep "
                              f"memory bounded), got {image_size}")
        check_augmentation(augment, "--data.augment")
        self.root, self.image_size, self.channels, self.augment = root, image_size, channels, augment
        base = Path(root).expanduser()
        self._dirs = {split: base / split for split in ("train", "test")}
        missing = [str(d.resolve()) for d in self._dirs.values() if not d.is_dir()]
        if missing:
            raise DataNotFoundError(f"imagefolder: no folder {' or '.join(missing)}; --data.root {root!r}: "
                                    f"{LAYOUT_HELP}")
        self._scans = {split: scan_split(d) for split, d in self._dirs.items()}
        train_classes, test_classes = self._scans["train"][0], self._scans["test"][0]
        if not train_classes:
            raise DataNotFoundError(f"imagefolder: {self._dirs['train'].resolve()} holds no class folders; "
                                    f"{LAYOUT_HELP}")
        if train_classes != test_classes:
            only_train = sorted(set(train_classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(train_classes))
            raise ConfigError(f"imagefolder {root!r}: train/ and test/ must hold the same class folders (class "
                              f"indices follow their sorted names); only in train/: {only_train or 'none'}, only "
                              f"in test/: {only_test or 'none'}")
        for split, (_, paths, labels) in self._scans.items():
            empty = [c for i, c in enumerate(train_classes) if not (labels == i).any()]
            if empty:
                raise DataNotFoundError(f"imagefolder: class folders {empty} under {self._dirs[split].resolve()} "
                                        f"hold no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.classes = train_classes
        # per instance, unlike the built-in sets' class attributes
        self.num_classes = len(train_classes)
        self.input_shape = (channels, *self._size())
        self._loaded: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        super().__init__(pool_fraction=pool_fraction, victim_train_size=victim_train_size, split_seed=split_seed,
                         holdout_fraction=holdout_fraction)

    def _size(self) -> tuple[int, int]:
        if self.image_size is not None:
            return self.image_size, self.image_size
        from PIL import Image

        first = self._scans["train"][1][0]
        with Image.open(first) as img:  # reads the header only
            return img.height, img.width

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self._loaded is None:
            size = None if self.image_size is None else (self.image_size, self.image_size)
            parts = []
            for split in ("train", "test"):
                _, paths, labels = self._scans[split]
                x = decode_images(paths, channels=self.channels, size=size, what=f"imagefolder {self._dirs[split]}")
                if tuple(x.shape[1:]) != self.input_shape:
                    raise ConfigError(f"imagefolder: {self._dirs[split]} holds {x.shape[2]}x{x.shape[3]} images, "
                                      f"train/ {self.input_shape[1]}x{self.input_shape[2]}; pass "
                                      "--data.image_size N to resize both")
                parts += [x, labels]
            self._loaded = tuple(parts)  # type: ignore[assignment]
        return self._loaded  # type: ignore[return-value]

    # Normalisation statistics of the training images (per channel), computed once at first use.
    @property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        return self._stats()[0]

    @property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return self._stats()[1]

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if not hasattr(self, "_mean_std"):
            train_x = self.load()[0].transpose(0, 1).reshape(self.channels, -1)
            std = train_x.std(1).clamp_min(1e-3)  # a constant channel must not divide by zero
            self._mean_std = (tuple(train_x.mean(1).tolist()), tuple(std.tolist()))
        return self._mean_std

    def config(self) -> dict:
        return {**super().config(), "root": self.root, "image_size": self.image_size, "channels": self.channels,
                "augment": self.augment}


@hookimpl
def register_datasets(register):
    register("imagefolder", ImageFolder)
