"""Label-only release: the "omit probabilities" baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import hookimpl
from .base import Defense


class LabelsOnly(Defense):
    """Release only the top-1 label, as a one-hot vector (the "omit probabilities" baseline)."""

    preserves_argmax = True

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if probs.shape[-1] == 1:  # one sigmoid output: release 0 or 1
            return (probs > 0.5).to(probs.dtype)
        return torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)


@hookimpl
def register_defenses(register):
    register("labels", LabelsOnly)
