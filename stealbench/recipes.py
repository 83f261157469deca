"""Named training recipes: optimiser, learning-rate schedule, label smoothing and augmentation, as papers train.

`--victim.recipe NAME` / `--surrogate.recipe NAME` pick one. A recipe owns its learning rate and weight decay;
an explicit `--victim.lr` / `--victim.weight_decay` (or the surrogate's) overrides them, and leaving them unset
(null) keeps the recipe's. `default` is stealbench's historical training (Adam, lr 1e-3, no schedule, no
augmentation): runs that name no recipe train exactly as before.

Augmentation is a switch here; *which* augmentation (crop, crop + flip) is the data set's choice (augment.py).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace
from typing import Literal

from .errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How a model trains. Schedules step once per optimiser step."""

    description: str
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    label_smoothing: float = 0.0
    augment: bool = False  # apply the data set's augmentation (augment.py)

    def with_overrides(self, lr: float | None = None, weight_decay: float | None = None) -> Recipe:
        """This recipe with an explicit lr / weight decay, where given."""
        changes = {k: v for k, v in (("lr", lr), ("weight_decay", weight_decay)) if v is not None}
        return replace(self, **changes) if changes else self

    def summary(self) -> str:
        """One line for the run header, e.g. ``sgd lr 0.1 (nesterov, momentum 0.9), wd 0.0005, cosine``."""
        extra = f" ({'nesterov, ' if self.nesterov else ''}momentum {self.momentum})" if self.optimizer == "sgd" else ""
        parts = [f"{self.optimizer} lr {self.lr:g}{extra}", f"wd {self.weight_decay:g}", self.schedule]
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        if self.augment:
            parts.append("augmented")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "default": Recipe("Adam lr 1e-3, constant, no augmentation (stealbench's historical training)"),
    # the standard CIFAR ResNet recipe (He et al. 2016 train with SGD 0.1, momentum 0.9; cosine annealing as in
    # Loshchilov & Hutter 2017; nesterov and label smoothing 0.1 as in common strong baselines)
    "cifar-sgd": Recipe("SGD lr 0.1, nesterov momentum 0.9, wd 5e-4, cosine, label smoothing 0.1, augmented",
                        optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, nesterov=True, schedule="cosine",
                        label_smoothing=0.1, augment=True),
    # super-convergence (Smith & Topin 2019): few epochs, a peak lr reached after 30% of the steps
    "cifar-onecycle": Recipe("SGD one-cycle to lr 0.1, nesterov momentum 0.9, wd 5e-4, augmented",
                             optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, nesterov=True,
                             schedule="onecycle", augment=True),
    "adamw-cosine": Recipe("AdamW lr 1e-3, wd 0.05, cosine, augmented", optimizer="adamw", lr=1e-3,
                           weight_decay=0.05, schedule="cosine", augment=True),
}


def get_recipe(name: str, option: str = "recipe") -> Recipe:
    """The recipe called `name`; unknown names fail listing close matches and every known recipe."""
    if isinstance(name, Recipe):
        return name
    if name in RECIPES:
        return RECIPES[name]
    close = difflib.get_close_matches(str(name), RECIPES, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    known = "; ".join(f"{k} ({r.description})" for k, r in RECIPES.items())
    raise ConfigError(f"--{option} {name!r} is not a training recipe.{hint} Known recipes: {known}.")


__all__ = ["RECIPES", "Recipe", "get_recipe"]
