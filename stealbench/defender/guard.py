"""Run-time rules for defenses: what every released answer must satisfy, checked on every batch.

A defense gets copies of the images and of the clean probabilities, so it cannot corrupt the defender's record
(the utility statistics are computed from the clean answers the defender kept). Editing those copies in place is
still a broken rule: it is reported, with the plugin's name and the rule, and the run stops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..defenses.base import Defense
from ..errors import DefenseOutputError

SIMPLEX_TOLERANCE = 1e-4
ARGMAX_TOLERANCE = 1e-6


def _broke(who: str, rule: str, problem: str) -> DefenseOutputError:
    return DefenseOutputError(f"defense {who} broke rule [{rule}]: it {problem}")


def check_probabilities(released: Tensor, clean: Tensor, who: str) -> None:
    """Raise DefenseOutputError unless `released` is a batch of probability vectors shaped like `clean`."""
    if not isinstance(released, Tensor):
        raise _broke(who, "shape-dtype-device", f"returned {type(released).__name__}, not a torch.Tensor")
    if released.shape != clean.shape:
        raise _broke(who, "shape-dtype-device", f"returned shape {tuple(released.shape)}, expected "
                                                 f"{tuple(clean.shape)}")
    if released.dtype != clean.dtype:
        raise _broke(who, "shape-dtype-device", f"returned dtype {released.dtype}, expected {clean.dtype}")
    if released.device != clean.device:
        raise _broke(who, "shape-dtype-device", f"returned a tensor on {released.device}, expected {clean.device}")
    if not torch.isfinite(released).all():
        raise _broke(who, "simplex", "returned NaN or infinite values")
    if (released < -SIMPLEX_TOLERANCE).any():
        raise _broke(who, "simplex", f"returned negative probabilities (min {released.min().item():.3g})")
    if clean.shape[-1] > 1:
        worst = (released.double().sum(-1) - 1).abs().max().item() if len(released) else 0.0
        if worst > SIMPLEX_TOLERANCE:
            raise _broke(who, "simplex", f"returned rows that do not sum to 1 (worst row off by {worst:.3g}); a "
                                         "defense must release probability vectors")
    elif (released > 1 + SIMPLEX_TOLERANCE).any():
        raise _broke(who, "simplex", "returned a binary probability above 1")


def guarded_answer(defense: Defense, x: Tensor, clean: Tensor, who: str) -> Tensor:
    """`defense(x, clean)` on copies, with every cheap rule checked; raises DefenseOutputError naming the rule."""
    x_copy, clean_copy = x.clone(), clean.clone()
    versions = (x_copy._version, clean_copy._version)  # bumped by any in-place edit, views included
    released = defense(x_copy, clean_copy)
    if (x_copy._version, clean_copy._version) != versions:
        edited = "the probabilities" if clean_copy._version != versions[1] else "the images"
        raise _broke(who, "inputs-unchanged", f"modified {edited} it was given in place; return a new tensor "
                                              "(e.g. `probs = probs * w`, not `probs *= w`)")
    check_probabilities(released, clean, who)
    if defense.preserves_argmax and len(clean) and clean.shape[-1] > 1:
        top = clean.argmax(-1, keepdim=True)
        # ties count as kept: the released top-1 value may equal another entry's
        lost = released.gather(-1, top).squeeze(-1) < released.amax(-1) - ARGMAX_TOLERANCE
        if lost.any():
            raise _broke(who, "argmax", f"declares preserves_argmax=True but changed the top-1 class of "
                                        f"{int(lost.sum())} of {len(clean)} answers")
    return released


__all__ = ["check_probabilities", "guarded_answer"]
