"""What a real attacker holds besides the oracle, for label modes that train models of their own (D-DAE).

The attacker's process builds one :class:`AttackerKit` and hands it to :meth:`LabelMode.prepare` before the attack
starts. It holds only the attacker's side: its pool images, the labels it owns (another data set's own classes,
or the framework's labelled seed set where the attack's paper assumes one), a network factory and a trainer
seeded from their own role ("shadow"), so a mode's models never shift the surrogate's seeds.
Nothing of the defender's (victim, defense, evaluation set, the pool's ground truth) is in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

#: seed images per class a mode draws when the attack has drawn no seed set (JBDA's default)
DEFAULT_SEED_PER_CLASS = 10


class SeedSetCache:
    """The run's one labelled seed set, shared by the attack and the label mode.

    The framework hands out one seed set size per run; `get(None)` returns the one already drawn (by the attack)
    or draws `DEFAULT_SEED_PER_CLASS` per class, so a mode that needs labelled images never collides with the
    attack's choice of size.
    """

    def __init__(self, fetch: Callable[[int], tuple[Tensor, Tensor]] | None) -> None:
        self._fetch = fetch
        self._drawn: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def available(self) -> bool:
        return self._fetch is not None

    def get(self, per_class: int | None = None) -> tuple[Tensor, Tensor]:
        if self._fetch is None:
            raise RuntimeError("no labelled seed set in this run")
        if per_class is None:
            per_class = next(iter(self._drawn), DEFAULT_SEED_PER_CLASS)
        if per_class not in self._drawn:
            self._drawn[per_class] = self._fetch(int(per_class))
        return self._drawn[per_class]

    __call__ = get


@dataclass
class AttackerKit:
    """The attacker's own resources (see the module docstring); built in the attacker's process."""

    pool_x: Tensor  # unlabelled attacker images, pixel space [0, 1]
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device
    #: a fresh network of the surrogate's architecture, each from its own "shadow" role seed
    new_model: Callable[[], nn.Module]
    #: train(model, x, soft targets, epochs) -> model, with the run's surrogate recipe ("shadow" seeds)
    train: Callable[[nn.Module, Tensor, Tensor, int], nn.Module]
    #: the mode's random stream (role "shadow"): shadow data choices, defense parameters, its small nets
    generator: torch.Generator
    #: the labelled seed set (see SeedSetCache), or None where the run has none
    seed_set: SeedSetCache | None = None
    #: labels of the pool when it comes from another data set (its own classes), else None
    pool_labels: Tensor | None = None
    log: Callable[[str], None] = field(default=print)


__all__ = ["AttackerKit", "DEFAULT_SEED_PER_CLASS", "SeedSetCache"]
