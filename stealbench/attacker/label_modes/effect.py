"""How much of a defense's perturbation a label mode undoes, for experiments that hold the clean answers."""

from __future__ import annotations

from torch import Tensor


def effect_removed(clean: Tensor, released: Tensor, recovered: Tensor) -> dict[str, float]:
    """1 - L1(recovered, clean) / L1(released, clean), and the share of the defense's argmax flips undone.

    1 means the clean answers are fully recovered, 0 no better than the released ones, < 0 worse.
    """
    clean, released, recovered = clean.double(), released.double(), recovered.double()
    l1_def = (released - clean).abs().sum(-1).mean().item()
    l1_rec = (recovered - clean).abs().sum(-1).mean().item()
    flipped = released.argmax(-1) != clean.argmax(-1)
    fixed = (recovered.argmax(-1) == clean.argmax(-1)) & flipped
    return {
        "l1_released": l1_def,
        "l1_recovered": l1_rec,
        "l1_removed": 1.0 - l1_rec / l1_def if l1_def > 0 else 0.0,
        "top1_flips_undone": fixed.double().sum().item() / max(int(flipped.sum()), 1),
    }


__all__ = ["effect_removed"]
