"""ImageDataset: one data set as in-memory tensors, and its leak-free splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError

#: the largest image side a data set may load or resize to: a 1024x1024 RGB image is 12 MB as float32, and
#: `--data.image_size 100000` would ask for 120 GB per image (the OOM killer, not a message, used to answer)
MAX_IMAGE_SIZE = 1024


@dataclass
class Splits:
    """Disjoint splits. Images are float32 (N, C, H, W) in pixel space [0, 1]; labels int64."""

    victim_x: Tensor
    victim_y: Tensor
    #: the defender's benign images that the victim never trains on (calibrating a defense, e.g. a detector's
    #: threshold); carved from the training part, disjoint from the attacker pool and the evaluation set
    holdout_x: Tensor
    holdout_y: Tensor
    pool_x: Tensor
    pool_y: Tensor  # ground truth of the attacker pool: only for class-balanced seed selection, never for training
    eval_x: Tensor
    eval_y: Tensor
    #: labels the attacker may use for its pool: a --pool_data set's own labels; None for the victim task's pool
    pool_labels: Tensor | None = None

    def sizes(self) -> dict[str, int]:
        return {"victim_train": len(self.victim_y), "defender_holdout": len(self.holdout_y),
                "attacker_pool": len(self.pool_y), "eval": len(self.eval_y)}


def stratified_split(labels: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices (first, second) with `fraction` of every class in `first`; vectorised over classes."""
    perm = torch.randperm(len(labels), generator=generator)
    shuffled = labels[perm]
    order = torch.argsort(shuffled, stable=True)  # group by class, random order within
    sorted_labels = shuffled[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[sorted_labels]
    take = rank < torch.round(counts[sorted_labels].double() * fraction).long()
    idx = perm[order]
    return idx[take], idx[~take]


class ImageDataset:
    """Base class for data sets. Subclasses implement :meth:`load` and set the class attributes.

    Splits: the victim trains on the data set's training part; its test part is divided, stratified, into the
    attacker pool (``pool_fraction``) and the evaluation set. So the evaluation set is disjoint from the victim's
    training data and from every image the attacker can query from the pool (as in Papernot et al. 2017, whose
    seed set came from the MNIST test set).
    """

    num_classes: ClassVar[int]
    input_shape: ClassVar[tuple[int, int, int]]  # (C, H, W)
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def __init__(self, pool_fraction: float = 0.5, victim_train_size: int | None = None, split_seed: int | None = None,
                 holdout_fraction: float = 0.1) -> None:
        if not 0.0 < pool_fraction < 1.0:
            raise ConfigError(f"data.pool_fraction must be in (0, 1), got {pool_fraction}")
        if not 0.0 < holdout_fraction < 0.5:
            raise ConfigError(f"data.holdout_fraction must be in (0, 0.5), got {holdout_fraction}")
        if victim_train_size is not None and victim_train_size < self.num_classes:
            raise ConfigError(f"data.victim_train_size must be >= {self.num_classes}, got {victim_train_size}")
        self.pool_fraction = pool_fraction
        self.victim_train_size = victim_train_size
        self.split_seed = split_seed
        self.holdout_fraction = holdout_fraction
        self._splits: Splits | None = None
        self._parts: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (train_x, train_y, test_x, test_y): float32 images in [0, 1] shaped (N, C, H, W), int64 labels."""
        raise NotImplementedError

    @property
    def key(self) -> str:
        return getattr(self, "registry_key", type(self).__name__.lower())

    def parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The whole (train_x, train_y, test_x, test_y), loaded and checked once."""
        if self._parts is None:
            loaded = self.load()
            self._check_loaded(*loaded)
            self._parts = loaded
        return self._parts

    def follow_run_seed(self, seed: int) -> None:
        """A split seed left null follows the run's --seed: every seed of a grid gets its own split (and with it
        its own victim), while runs that share a seed share the split, so their differences stay paired."""
        if self.split_seed is None:
            if self._splits is not None:
                raise RuntimeError("follow_run_seed after the splits were drawn")
            self.split_seed = seed

    def splits(self) -> Splits:
        if self._splits is None:
            train_x, train_y, test_x, test_y = self.parts()
            # standalone use (tests, bench scripts) without a run: split seed 0
            g = torch.Generator().manual_seed(0 if self.split_seed is None else self.split_seed)
            holdout, train = stratified_split(train_y, self.holdout_fraction, g)
            holdout_x, holdout_y = train_x[holdout], train_y[holdout]
            train_x, train_y = train_x[train], train_y[train]
            if self.victim_train_size is not None and self.victim_train_size > len(train_y):
                # it would be recorded as if used while the victim trained on fewer images
                raise ConfigError(
                    f"--data.victim_train_size {self.victim_train_size} is more than the {len(train_y)} training "
                    f"images {self.key!r} has available ({len(train_y) + len(holdout_y)} in its training part, "
                    f"{len(holdout_y)} kept as the defender's holdout); use at most {len(train_y)}, or null for all")
            if self.victim_train_size is not None and self.victim_train_size < len(train_y):
                keep, _ = stratified_split(train_y, self.victim_train_size / len(train_y), g)
                train_x, train_y = train_x[keep], train_y[keep]
            pool, evaluation = stratified_split(test_y, self.pool_fraction, g)
            self._splits = Splits(train_x, train_y, holdout_x, holdout_y, test_x[pool], test_y[pool],
                                  test_x[evaluation], test_y[evaluation])
        return self._splits

    def _check_loaded(self, *tensors: Tensor) -> None:
        train_x, train_y, test_x, test_y = tensors
        name_of = type(self).__name__
        for part, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if x.dtype != torch.float32 or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise TypeError(
                    f"{name_of}.load() returned {part} images of dtype {x.dtype} and shape "
                    f"{tuple(x.shape)}; expected float32 (N, {', '.join(map(str, self.input_shape))})"
                )
            if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
                raise TypeError(f"{name_of}.load() returned {part} labels of dtype {getattr(y, 'dtype', type(y))} "
                                f"and shape {tuple(getattr(y, 'shape', ()))}; expected int64 (N,)")
            if len(y) != len(x):
                raise ConfigError(f"data set {self.key!r}: {part} part has {len(x)} images but {len(y)} labels; "
                                  "its files are damaged or do not belong together")
            if len(y) == 0:
                raise ConfigError(f"data set {self.key!r}: the {part} part is empty")
            bad = (y < 0) | (y >= self.num_classes)
            if bool(bad.any()):
                raise ConfigError(
                    f"data set {self.key!r}: {int(bad.sum())} {part} labels lie outside [0, {self.num_classes}) "
                    f"(e.g. {int(y[bad][0])} at index {int(bad.nonzero()[0])}); the label file is damaged or the "
                    f"data set's num_classes ({self.num_classes}) is wrong")

    def config(self) -> dict:
        return {"pool_fraction": self.pool_fraction, "victim_train_size": self.victim_train_size,
                "split_seed": self.split_seed, "holdout_fraction": self.holdout_fraction}


class StoredDataset(ImageDataset):
    """A data set read from files under `root` in torchvision's layout (fetched there by `download` where a network
    is). Subclasses implement :meth:`load`.

    Args:
        root: the folder that holds the data set's files (e.g. ../shared/data)
        download: fetch the files into root first (needs internet)
        pool_fraction: share of the test part that becomes the attacker pool (the rest: evaluation set)
        victim_train_size: train the victim on this many training images (null: all, minus the holdout)
        split_seed: seed of the stratified splits (null: the run's --seed, so each seed has its own split)
        holdout_fraction: share of the training part kept as the defender's holdout (never trained on)
    """

    def __init__(self, root: str = "data", download: bool = False, pool_fraction: float = 0.5,
                 victim_train_size: int | None = None, split_seed: int | None = None,
                 holdout_fraction: float = 0.1) -> None:
        super().__init__(pool_fraction=pool_fraction, victim_train_size=victim_train_size, split_seed=split_seed,
                         holdout_fraction=holdout_fraction)
        self.root = root
        self.download = download
