"""The Defense interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass
class DefenseSetup:
    """What a defense may use in :meth:`Defense.setup`: the defender owns the victim and its data.

    Setup runs in the defender's process, with its own random stream (`generator`, seeded from the run seed and
    the role "defense"), so nothing a defense draws can change the attacker's luck.
    """

    victim: nn.Module  # pixel-space images -> logits; frozen
    train_x: Tensor  # the victim's training images, pixel space [0, 1]
    train_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device
    generator: torch.Generator
    #: train_model(net, x, targets, epochs, *, log_name="defense", loss=None) -> net: trains a net with the run's
    #: trainer on (x, soft targets); `loss(logits, targets) -> scalar` replaces the soft cross-entropy
    train_model: Callable[..., nn.Module] | None = None
    #: load_dataset(key, *, part="train", **options) -> (x, y): another registered data set's `train` or `test`
    #: part, as stored (not resized); options go to its constructor, e.g. ``root="../shared/data"``. Refuses
    #: (ConfigError) a set that shares images with the attacker's pool: a defense may not train on the attacker's data
    load_dataset: Callable[..., tuple[Tensor, Tensor]] | None = None
    #: benign images of the victim's task that the victim never trained on (for calibration, e.g. a threshold)
    holdout_x: Tensor | None = None
    holdout_y: Tensor | None = None


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

    def state_size(self) -> int | None:
        """How much the defense keeps from the query stream (e.g. stored queries, centroids), recorded as
        `defense/state_size` in results.json's `price`; 0 for a stateless defense, None: stateful, not reported."""
        return None if self.stateful else 0

    def report(self) -> dict[str, float]:
        """Extra numbers for results.json (e.g. when a detector raised its alarm); keys are prefixed `defense/`."""
        return {}

    def config(self) -> dict:
        """The defense's public settings (plain attributes; submodules and tensors are state, not settings)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k != "training" and not isinstance(v, (torch.Tensor, nn.Module))}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())
