"""The Defense interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass
class DefenseSetup:
    """What a defense may use in :meth:`Defense.setup`: the defender owns the victim and its data."""

    victim: nn.Module  # pixel-space images -> logits; frozen
    train_x: Tensor  # the victim's training images, pixel space [0, 1]
    train_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device
    generator: torch.Generator
    #: trains a fresh net on (x, soft targets); for defenses that need a proxy or auxiliary model
    train_model: Callable[..., nn.Module] | None = None
    #: loads another registered data set by key (e.g. an outlier set), as ``(train_x, train_y)``;
    #: keyword options go to its constructor, e.g. ``load_dataset("fashion-mnist", root="../shared/data")``
    load_dataset: Callable[..., tuple[Tensor, Tensor]] | None = None


class Defense(nn.Module):
    """Transforms released probabilities: ``forward(x, probs) -> probs'``, batched.

    ``x`` is the batch of queried images (pixel space), ``probs`` the victim's probabilities ``(B, K)``.
    Return a tensor of the same shape, dtype and device whose rows lie on the probability simplex.
    A stateful defense (one that watches the query stream) sets ``stateful = True`` and restores its
    initial state in :meth:`reset`. Subclass ``__init__`` arguments become CLI/YAML options, so type them.
    """

    #: True when the released argmax always equals the victim's argmax (the conformance kit checks it)
    preserves_argmax: bool = False
    #: True when the answer depends on earlier queries (the oracle keeps one instance per run)
    stateful: bool = False
    #: True when the same input can get different answers (randomised defenses)
    randomized: bool = False

    def setup(self, context: DefenseSetup) -> None:
        """Called once before any query; train proxies or detectors here."""

    def reset(self) -> None:
        """Forget the query history (stateful defenses)."""

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, probs)")

    def report(self) -> dict[str, float]:
        """Extra numbers for results.json (e.g. when a detector raised its alarm); keys are prefixed `defense/`."""
        return {}

    def config(self) -> dict:
        """The defense's public settings (plain attributes; submodules and tensors are state, not settings)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k != "training" and not isinstance(v, (torch.Tensor, nn.Module))}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())
