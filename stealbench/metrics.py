"""Utility statistics of a defense: how much the released answers differ from the clean ones."""

from __future__ import annotations

import torch
from torch import Tensor

# KL terms use max(q, _FLOOR): a released zero where the clean answer had mass would be +inf.
_FLOOR = 1e-12


def kl_nats(p: Tensor, q: Tensor) -> Tensor:
    """Row-wise KL(p || q) in nats."""
    p, q = p.double(), q.double()
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(_FLOOR))).sum(-1)


class DefenseStats:
    """Accumulates, over batches, the DESIGN §3 defense statistics for (clean, released) pairs."""

    def __init__(self) -> None:
        from torchmetrics import MeanMetric  # lazy: torchmetrics imports torchvision (~3 s)

        self.kl = MeanMetric()
        self.kl_rev = MeanMetric()
        self.l1 = MeanMetric()
        self.changed = MeanMetric()
        self.count = 0

    def update(self, clean: Tensor, released: Tensor) -> None:
        clean, released = clean.detach().cpu(), released.detach().cpu()
        self.kl.update(kl_nats(clean, released))
        self.kl_rev.update(kl_nats(released, clean))
        self.l1.update((clean.double() - released.double()).abs().sum(-1))
        self.changed.update((clean.argmax(-1) != released.argmax(-1)).double())
        self.count += len(clean)

    def compute(self, prefix: str) -> dict[str, float]:
        if self.count == 0:
            return {}
        return {
            f"{prefix}kl_nats": float(self.kl.compute()),
            f"{prefix}kl_nats_rev": float(self.kl_rev.compute()),
            f"{prefix}l1": float(self.l1.compute()),
            f"{prefix}top1_changed": float(self.changed.compute()),
        }
