"""Utility statistics of a defense: how much the released answers differ from the clean ones.

Precision matters here. A confident victim's float32 softmax underflows: the small classes of an MNIST victim
have probabilities like 1e-40 or exactly 0 in float32, while the reverse sigmoid releases about 0.05 for each of
them. KL(y'||y) = sum y' (log y' - log y) is then dominated by log y of those classes, and a float32 y met by a
1e-12 floor reads a made-up 10-11.6 nats. So the clean side enters as float64 log-probabilities straight from the
victim's logits (``log_softmax(logits.double())``, exact where the softmax underflows), passed as ``clean_log``.

The released side is taken as released: the answer a user receives is the defense's float32 output, so log y' is
computed in float64 from those very numbers, and the floor applies only where y' is exactly 0 (a top-k or rounding
defense zeroes classes the victim gave mass to; KL(y||y') is then infinite and the floor makes it finite and large).
Recomputing the defense in float64 would measure an answer nobody received; for the reverse sigmoid it would not
change the figures anyway, since it clips y to [1e-9, 1-1e-9] and releases no tiny values.
"""

from __future__ import annotations

import torch
from torch import Tensor

# log y' uses max(y', _FLOOR) only where y' is exactly 0: a released zero where the clean answer had mass would
# make KL(y||y') +inf.
_FLOOR = 1e-12


def safe_log(probs: Tensor) -> Tensor:
    """log(probs) in float64, with the floor only where a probability is exactly 0."""
    p = probs.double()
    return torch.where(p > 0, p, torch.full_like(p, _FLOOR)).log()


def kl_from_logs(p: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise KL(p || q) = sum p (log p - log q) in nats, float64; terms with p = 0 are 0. Clamped at 0: KL is
    never negative, and an identical answer (no defense) must read 0, not rounding noise like -1.7e-9."""
    p = p.double()
    terms = p * (log_p.double() - log_q.double())
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(-1).clamp_min(0.0)


def kl_nats(p: Tensor, q: Tensor) -> Tensor:
    """Row-wise KL(p || q) in nats from probabilities (both logs from :func:`safe_log`)."""
    return kl_from_logs(p, safe_log(p), safe_log(q))


class DefenseStats:
    """Accumulates, over batches, the DESIGN §3 defense statistics for (clean, released) pairs."""

    def __init__(self) -> None:
        from torchmetrics import MeanMetric  # lazy: torchmetrics imports torchvision (~3 s)

        self.kl = MeanMetric()
        self.kl_rev = MeanMetric()
        self.l1 = MeanMetric()
        self.changed = MeanMetric()
        self.count = 0

    def update(self, clean: Tensor, released: Tensor, clean_log: Tensor | None = None) -> None:
        """`clean_log`: the victim's float64 log-probabilities (``log_softmax(logits.double())``); give them
        whenever the logits are at hand, else log(clean) is used and float32 underflow skews KL(y'||y)."""
        clean, released = clean.detach().cpu(), released.detach().cpu()
        log_y = safe_log(clean) if clean_log is None else clean_log.detach().cpu().double()
        log_y_rel = safe_log(released)
        y = log_y.exp()  # float64: consistent with log_y, nonzero where float32 underflowed
        self.kl.update(kl_from_logs(y, log_y, log_y_rel))
        self.kl_rev.update(kl_from_logs(released, log_y_rel, log_y))
        self.l1.update((y - released.double()).abs().sum(-1))
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
