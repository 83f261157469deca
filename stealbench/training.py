"""Training with Lightning: one fresh Trainer per phase (victim, each surrogate round)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .augment import BatchAugment, dataset_augmentation
from .quiet import quiet_lightning
from .recipes import Recipe, get_recipe
from .steps import build_optimizer, build_schedule


# Keys of --trainer that stealbench sets per phase; the user's values for these are replaced.
PHASE_KEYS = ("max_epochs", "min_epochs", "max_steps", "logger", "enable_checkpointing", "enable_progress_bar",
              "enable_model_summary", "num_sanity_val_steps", "callbacks", "default_root_dir")


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against probability-vector targets (one-hot targets give the usual CE).

    Computed in float32 whatever the training precision: under bf16/16 autocast (or true half) a low-precision
    log-softmax loses the small probabilities that soft labels carry.
    """
    with torch.autocast(logits.device.type, enabled=False):
        return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def smooth_targets(targets: Tensor, smoothing: float) -> Tensor:
    """Label smoothing of probability targets: (1 - e) * t + e / K (soft answers are smoothed alike)."""
    return targets if smoothing == 0 else targets * (1.0 - smoothing) + smoothing / targets.shape[-1]


class Classifier(L.LightningModule):
    """Wraps a plain nn.Module for training on (images, probability targets), as `recipe` says.

    Without a recipe: Adam with `lr` and `weight_decay`, no schedule (the `default` recipe). `augment` runs on
    each batch on the training device; `loader` (a ShuffledBatches) is moved to that device once, when it fits.
    `loss(logits, targets) -> scalar` replaces the soft cross-entropy (a defense may train towards another
    objective); it gets float32 logits, with autocast off.
    """

    def __init__(self, net: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, log_name: str = "train", *,
                 recipe: Recipe | None = None, augment: BatchAugment | None = None,
                 loader: ShuffledBatches | None = None,
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.net = net
        self.recipe = (recipe or get_recipe("default")).with_overrides(lr if recipe is None else None,
                                                                       weight_decay if recipe is None else None)
        self.lr = self.recipe.lr
        self.weight_decay = self.recipe.weight_decay
        self.log_name = log_name
        self.augment = augment if augment is not None and augment.active and self.recipe.augment else None
        self._loader = loader
        self.loss = loss

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        # the earliest hook that knows the device: Lightning iterates the loader before on_train_start
        device = self.trainer.strategy.root_device
        if self._loader is not None and fits_on(device, self._loader.nbytes()):
            self._loader.to(device)  # one transfer instead of one per batch

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, targets = batch
        if self.augment is not None:
            x = self.augment(x)
        logits = self.net(x)
        if self.loss is None:
            loss = soft_cross_entropy(logits, smooth_targets(targets, self.recipe.label_smoothing))
        else:
            with torch.autocast(logits.device.type, enabled=False):
                loss = self.loss(logits.float(), targets.float())
        self.log(f"{self.log_name}/train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        # the same optimiser and schedule an attack's ctx.optimizer builds from the recipe (stealbench.steps)
        opt = build_optimizer(self.recipe, self.net.parameters(), half=param_dtype(self.net) == torch.float16)
        scheduler = build_schedule(self.recipe, opt, max(1, int(self.trainer.estimated_stepping_batches))
                                   if self.recipe.schedule != "constant" else None)
        if scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of training data (plus the per-epoch shuffled copy) fit in a third of the free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 3 * nbytes < free
    return device.type != "cpu"  # MPS shares the host's memory; CPU tensors are already there


@dataclass
class TrainSettings:
    """How a phase trains: optimiser settings plus the user's --trainer options (accelerator, precision, ...)."""

    batch_size: int = 64
    lr: float | None = None  # None: the recipe's
    weight_decay: float | None = None  # None: the recipe's
    trainer: dict[str, Any] = field(default_factory=dict)
    progress_bar: bool = False
    logger: Any = None  # shared across phases, or None
    recipe: str | Recipe = "default"  # see recipes.py
    augment: str = "none"  # the data set's augmentation (augment.dataset_augmentation); used if the recipe says so

    @classmethod
    def from_config(cls, cfg, role: str, data, **common: Any) -> TrainSettings:
        """Settings of a VictimConfig / SurrogateConfig (`role`: "victim" or "surrogate") training on images of
        `data`: its recipe (checked now, so a typo fails before any training) and the data set's augmentation.
        `common`: trainer, progress_bar, logger."""
        recipe = get_recipe(cfg.recipe, f"{role}.recipe")
        return cls(batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, recipe=recipe,
                   augment=dataset_augmentation(data), **common)

    def resolved_recipe(self) -> Recipe:
        """The recipe with the explicit lr / weight decay applied: what training actually uses."""
        return get_recipe(self.recipe).with_overrides(self.lr, self.weight_decay)


class ShuffledBatches:
    """Mini-batches of in-memory tensors: one gather of the whole data per epoch, then contiguous slices (views).

    Lightning takes any re-iterable with a length as a train loader. One big gather per epoch instead of one small
    indexing op (or one `__getitem__` call per sample) per batch: small multi-threaded gathers stall badly when the
    CPU is shared.
    """

    def __init__(self, x: Tensor, targets: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.targets, self.batch_size = x, targets, batch_size
        # on the CPU whatever the data's device: the same batch order on every device
        self.generator = torch.Generator().manual_seed(seed)

    def to(self, device: torch.device) -> ShuffledBatches:
        """Hold the data on `device` (e.g. the GPU): batches are then slices there, with no per-batch copy."""
        self.x, self.targets = self.x.to(device), self.targets.to(device)
        return self

    def nbytes(self) -> int:
        return self.x.nbytes + self.targets.nbytes

    def __iter__(self):
        # under DDP each rank takes its shard of the same permutation (distributed.shard); else all of it
        perm = distributed.shard(torch.randperm(len(self.x), generator=self.generator)).to(self.x.device)
        x, targets = self.x[perm], self.targets[perm]
        return zip(x.split(self.batch_size), targets.split(self.batch_size))

    def __len__(self) -> int:
        return -(-distributed.shard_size(len(self.x)) // self.batch_size)


def make_loader(x: Tensor, targets: Tensor, *, batch_size: int, seed: int) -> ShuffledBatches:
    """Shuffled mini-batches of (x, targets), reshuffled every epoch, deterministic under `seed`."""
    return ShuffledBatches(x, targets, batch_size, seed)


def fit(net: nn.Module, x: Tensor, targets: Tensor, epochs: int, settings: TrainSettings, *, seed: int,
        log_name: str = "train", loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> nn.Module:
    """Train `net` on (x, targets) for `epochs` with a fresh Trainer, as `settings.recipe` says.

    Returns the trained net in eval mode and in float32, whatever `--trainer.precision` trained it in, so that the
    oracle, attacks and caches always see one dtype. `loss(logits, targets) -> scalar` replaces the soft
    cross-entropy (None keeps it).
    """
    quiet_lightning()
    # Lightning keeps the mode of the net it is given, and fit returns nets in eval mode: a net trained further
    # (fine-tuning, warm starts) would otherwise train with dropout off and batch-norm statistics frozen
    net.train()
    loader = make_loader(x, targets, batch_size=settings.batch_size, seed=seed)
    augment = BatchAugment(settings.augment, seed=seed + 1)  # its own stream, apart from the batch order
    module = Classifier(net, log_name=log_name, recipe=settings.resolved_recipe(), augment=augment, loader=loader,
                        loss=loss)
    trainer_kwargs = {k: v for k, v in settings.trainer.items() if k not in PHASE_KEYS}
    # several devices: DDP in workers started for this call only (distributed.py); the logger stays here
    trainer_kwargs, parallel = distributed.plan(trainer_kwargs, seed=seed)
    logger = settings.logger if parallel is None else None
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    with distributed.launching(parallel, trainer, loader, log_name=log_name, logger=settings.logger):
        trainer.fit(module, train_dataloaders=loader)
    return module.net.float().eval()


def param_dtype(net: nn.Module) -> torch.dtype:
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


@torch.no_grad()
def predict_probs(net: nn.Module, x: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Softmax outputs of `net` for `x`, batched, returned on the CPU in float32 (inputs cast to the net's dtype,
    so a half-precision net works too)."""
    net = net.to(device).eval()
    dtype = param_dtype(net)
    parts = [torch.softmax(net(xb.to(device, dtype)).float(), dim=-1).cpu() for xb in x.split(batch_size)]
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
