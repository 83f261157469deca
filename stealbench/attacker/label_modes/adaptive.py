"""Defense-aware answers to MAD and to Adaptive Misinformation.

- `argmax` (answers `mad`, `mad-argmax`): the MAD paper's (Orekondy et al., ICLR 2020) defense-aware "argmax"
  attacker trains on the top-1 of every answer. MAD perturbs the probabilities to poison the attacker's gradient;
  MAD-argmax keeps the top-1, so this attacker sees the victim's own labels. The behaviour is `hard`'s; this mode
  only declares the defenses it answers.
- `indist` (answers `misinformation`): Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020) releases
  y' = (1 - a) y + a y_mis with a = sigmoid(nu (tau - msp(x))): queries its detector finds in-distribution (high
  max-softmax) get the victim's own answer, which a trained victim gives confidently; the others get, smoothly,
  the answer of a model trained to be wrong. The defense-aware attacker trains only on answers that look
  in-distribution: those whose released top-1 probability is at least `min_confidence`. The rest are queries
  spent for nothing: their training targets are zero rows (no loss, no gradient), and the share kept is reported
  (`label_mode/kept`; the cost in queries is 1 - kept of the budget). The rule needs no knowledge of tau.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ... import hookimpl
from ...errors import ConfigError
from .base import LabelMode, check_choice
from .plain import HardLabels


class ArgmaxAgainstMAD(HardLabels):
    """MAD's defense-aware attacker: train on the argmax of every answer (MAD perturbs the rest)"""

    answers = ("mad", "mad-argmax")


@dataclass
class InDistributionOptions:
    #: answers whose released top-1 probability is below this are not trained on (zero target rows)
    min_confidence: float = 0.9
    #: train on the kept probabilities (`soft`) or their argmax (`hard`)
    then: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        ok = isinstance(self.min_confidence, (int, float)) and not isinstance(self.min_confidence, bool)
        if not ok or not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"--label_options.min_confidence must be a number in [0, 1], got {self.min_confidence!r}")
        check_choice("then", self.then, ("soft", "hard"))


class InDistribution(LabelMode):
    """answer to Adaptive Misinformation: train only on answers that look in-distribution (confident top-1)"""

    answers = ("misinformation",)
    Options = InDistributionOptions

    def __init__(self, num_classes: int, options: InDistributionOptions | None = None) -> None:
        super().__init__(num_classes, options)
        self._answers = 0
        self._kept = 0

    def keep(self, released: Tensor) -> Tensor:
        """Which answers the attacker trains on."""
        return released.amax(-1) >= self.options.min_confidence

    def __call__(self, released: Tensor) -> Tensor:
        targets = super().__call__(released)
        keep = self.keep(released.detach().float())
        self._answers += len(released)
        self._kept += int(keep.sum())
        return targets * keep.unsqueeze(-1).to(targets.dtype)

    def report(self) -> dict[str, float]:
        if not self._answers:
            return {}
        return {"label_mode/kept": self._kept / self._answers, "label_mode/min_confidence": self.options.min_confidence}


@hookimpl
def register_label_modes(register):
    register("argmax", ArgmaxAgainstMAD)
    register("indist", InDistribution)


__all__ = ["ArgmaxAgainstMAD", "InDistribution", "InDistributionOptions"]
