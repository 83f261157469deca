"""`soft` and `hard`: the released answers as they are, or their top-1 only."""

from __future__ import annotations

from ... import hookimpl
from .base import ALL, LabelMode


class SoftLabels(LabelMode):
    """train on the released probabilities (the non-adaptive attacker)"""

    answers = ALL


class HardLabels(LabelMode):
    """train on the argmax of the released probabilities (one-hot): top-1 only

    Blind to any perturbation that keeps the argmax.
    """

    answers = ALL
    then = "hard"


@hookimpl
def register_label_modes(register):
    register("soft", SoftLabels)
    register("hard", HardLabels)


__all__ = ["HardLabels", "SoftLabels"]
