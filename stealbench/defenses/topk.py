"""Top-k release: keep the k largest probabilities, renormalised."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import hookimpl
from ..errors import ConfigError
from .base import Defense


class TopK(Defense):
    """Release the k largest probabilities renormalised to sum to 1; the others become 0."""

    preserves_argmax = True

    def __init__(self, k: int = 1) -> None:
        """
        Args:
            k: how many of the largest probabilities to keep (k >= number of classes releases everything).
        """
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"defense.k must be an integer >= 1 (probabilities kept per answer), got {k!r}")
        self.k = k

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        num_classes = probs.shape[-1]
        if self.k >= num_classes:
            return probs
        values, indices = probs.topk(self.k, dim=-1)  # sorted: the order of the k largest is kept
        kept = torch.zeros_like(probs).scatter_(-1, indices, values)
        total = kept.sum(-1, keepdim=True)
        # an all-zero top-k (impossible for a softmax output) falls back to uniform over the kept classes
        uniform = torch.zeros_like(probs).scatter_(-1, indices, 1.0 / self.k)
        return torch.where(total > 0, kept / total.clamp_min(torch.finfo(probs.dtype).tiny), uniform)


@hookimpl
def register_defenses(register):
    register("topk", TopK)
