"""Typed option groups of an experiment. Their fields are the CLI options (`--victim.arch`, `--wandb.mode`, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LabelMode = Literal["soft", "hard"]


@dataclass
class VictimConfig:
    """The victim: architecture and training. Trained victims are cached and reused across runs."""

    arch: str = "cnn"  # registry key (`stealbench list architectures`) or any timm model name
    epochs: int = 10
    batch_size: int = 64
    recipe: str = "default"  # training recipe (stealbench/recipes.py): optimiser, schedule, augmentation
    lr: float | None = None  # None: the recipe's (default: 1e-3); a value overrides it
    weight_decay: float | None = None  # None: the recipe's (default: 0); a value overrides it
    seed: int | None = None  # None: the run's --seed
    checkpoint: str | None = None  # load these weights instead of training (stealbench .pt or Lightning .ckpt)
    cache: bool = True  # reuse a cached victim trained with the same settings
    cache_dir: str | None = None  # default: $STEALBENCH_CACHE_DIR or ~/.cache/stealbench


@dataclass
class SurrogateConfig:
    """The attacker's model: architecture and optimiser (epochs are the attack's choice)."""

    arch: str = "cnn"
    batch_size: int = 64
    recipe: str = "default"  # training recipe (stealbench/recipes.py)
    lr: float | None = None  # None: the recipe's (default: 1e-3); a value overrides it
    weight_decay: float | None = None  # None: the recipe's (default: 0); a value overrides it
    pretrained: bool = False  # start from timm's pretrained weights (timm architectures only; see models/timm_models)


@dataclass
class WandbConfig:
    """Weights & Biases logging. `auto`: online when logged in, else offline (sync later); WANDB_MODE wins."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "stealbench"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
