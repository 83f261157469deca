"""Training with Lightning: one fresh Trainer per phase (victim, each surrogate round)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Keys of --trainer that stealbench sets per phase; the user's values for these are replaced.
PHASE_KEYS = ("max_epochs", "min_epochs", "max_steps", "logger", "enable_checkpointing", "enable_progress_bar",
              "enable_model_summary", "num_sanity_val_steps", "callbacks", "default_root_dir")


def quiet_lightning() -> None:
    """Keep the console for stealbench's own lines: no GPU/TPU banners, no small-data warnings."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.trainer.connectors.signal_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*treespec.*")


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against probability-vector targets (one-hot targets give the usual CE)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


class Classifier(L.LightningModule):
    """Wraps a plain nn.Module for training on (images, probability targets)."""

    def __init__(self, net: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, log_name: str = "train",
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.log_name = log_name
        #: loss(logits, targets) -> scalar; a defense may train towards another objective than the soft CE
        self.loss = loss if loss is not None else soft_cross_entropy

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, targets = batch
        loss = self.loss(self.net(x), targets)
        self.log(f"{self.log_name}/train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@dataclass
class TrainSettings:
    """How a phase trains: optimiser settings plus the user's --trainer options (accelerator, precision, ...)."""

    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    trainer: dict[str, Any] = field(default_factory=dict)
    progress_bar: bool = False
    logger: Any = None  # shared across phases, or None


class ShuffledBatches:
    """Mini-batches of in-memory tensors: one gather of the whole data per epoch, then contiguous slices (views).

    Lightning takes any re-iterable with a length as a train loader. One big gather per epoch instead of one small
    indexing op (or one `__getitem__` call per sample) per batch: small multi-threaded gathers stall badly when the
    CPU is shared.
    """

    def __init__(self, x: Tensor, targets: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.targets, self.batch_size = x, targets, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        perm = torch.randperm(len(self.x), generator=self.generator)
        x, targets = self.x[perm], self.targets[perm]
        return zip(x.split(self.batch_size), targets.split(self.batch_size))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def make_loader(x: Tensor, targets: Tensor, *, batch_size: int, seed: int) -> ShuffledBatches:
    """Shuffled mini-batches of (x, targets), reshuffled every epoch, deterministic under `seed`."""
    return ShuffledBatches(x, targets, batch_size, seed)


def fit(net: nn.Module, x: Tensor, targets: Tensor, epochs: int, settings: TrainSettings, *, seed: int,
        log_name: str = "train", loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> nn.Module:
    """Train `net` on (x, targets) for `epochs` with a fresh Trainer; returns the trained net in eval mode.

    `loss(logits, targets) -> scalar` replaces the soft cross-entropy (None keeps it).
    """
    quiet_lightning()
    loader = make_loader(x, targets, batch_size=settings.batch_size, seed=seed)
    module = Classifier(net, lr=settings.lr, weight_decay=settings.weight_decay, log_name=log_name, loss=loss)
    trainer_kwargs = {k: v for k, v in settings.trainer.items() if k not in PHASE_KEYS}
    logger = settings.logger
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, train_dataloaders=loader)
    return module.net.eval()


@torch.no_grad()
def predict_probs(net: nn.Module, x: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Softmax outputs of `net` for `x`, batched, returned on the CPU."""
    net = net.to(device).eval()
    parts = [torch.softmax(net(xb.to(device)), dim=-1).cpu() for xb in x.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


def predict_log_probs(net: nn.Module, x: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    """float64 log-softmax of `net`'s logits for `x`, batched, on the CPU: exact where a float32 softmax underflows
    (the KL statistics need log y of classes a confident victim gives ~1e-40). float64 on the CPU: some
    accelerators (MPS) have no float64."""
    net = net.to(device).eval()
    with torch.no_grad():
        parts = [torch.log_softmax(net(xb.to(device)).cpu().double(), dim=-1) for xb in x.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


def resolve_device(trainer: dict[str, Any]) -> torch.device:
    """The device Lightning will train on, for the inference stealbench runs itself (oracle, evaluation)."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        devices = trainer.get("devices", "auto")
        index = devices[0] if isinstance(devices, (list, tuple)) and devices else 0
        return torch.device("cuda", int(index))
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")
