"""`invert`: undo the reverse sigmoid (`deceptive`), with known parameters or ones estimated from the answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ... import hookimpl
from ...errors import ConfigError
from .base import LabelMode, check_choice, check_number
from .estimate import Estimate, estimate_reverse_sigmoid
from .reverse_sigmoid import invert_reverse_sigmoid

#: answers kept for the estimate (re-estimated whenever the sample has doubled, up to this many)
MAX_ESTIMATE_ROWS = 2048
#: an estimate that explains all but this share of its rows is kept (no more re-estimating)
GOOD_MISFIT = 0.1
#: an estimate that leaves more than this share of its rows unexplained is not used: the attacker can see that it
#: does not fit its answers, and inverting with wrong parameters moves the answers further from the clean ones
#: than the defense did (answers then pass through, as for `soft`)
USABLE_MISFIT = 0.5


@dataclass
class InvertOptions:
    #: the reverse sigmoid's beta; null estimates it (with gamma) from the attacker's answers
    beta: float | None = None
    #: the reverse sigmoid's gamma; null estimates it (with beta) from the attacker's answers
    gamma: float | None = None
    #: train on the recovered probabilities (`soft`) or their argmax (`hard`)
    then: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        for key in ("beta", "gamma"):
            check_number(key, getattr(self, key), minimum=0, strict=True, allow_none=True)
        if (self.beta is None) != (self.gamma is None):
            raise ConfigError("--label_options.beta and --label_options.gamma must both be given (known defense) "
                              "or both be null (estimated from the answers)")
        check_choice("then", self.then, ("soft", "hard"))


class Invert(LabelMode):
    """invert the reverse sigmoid (deceptive); known beta/gamma or estimated from the answers

    Until the answers show enough clip-floor rows to estimate from, or while the estimate does not fit them
    (misfit above USABLE_MISFIT), answers pass through unchanged (reported as `label_mode/estimated_from` 0 or
    `label_mode/estimate_used` 0). Targets already handed out are not revised when the estimate moves.
    """

    answers = ("deceptive",)
    Options = InvertOptions

    def __init__(self, num_classes: int, options: InvertOptions | None = None) -> None:
        super().__init__(num_classes, options)
        self.known = self.options.beta is not None
        self.estimate: Estimate | None = None
        self._seen: list[Tensor] = []
        self._seen_rows = 0
        self._estimated_at = 0

    @property
    def parameters(self) -> tuple[float, float] | None:
        if self.known:
            return float(self.options.beta), float(self.options.gamma)
        if self.estimate is None or self.estimate.misfit > USABLE_MISFIT:
            return None
        return self.estimate.beta, self.estimate.gamma

    def observe(self, released: Tensor) -> None:
        if self.known or len(released) == 0 or self._seen_rows >= MAX_ESTIMATE_ROWS:
            return
        if self.estimate is not None and self.estimate.misfit < GOOD_MISFIT and self.estimate.rows >= 32:
            return
        self._seen.append(released.detach().cpu())
        self._seen_rows += len(released)
        if self._estimated_at == 0 or self._seen_rows >= 2 * self._estimated_at:
            found = estimate_reverse_sigmoid(torch.cat(self._seen)[:MAX_ESTIMATE_ROWS])
            if found is not None:
                self.estimate = found
                self._estimated_at = self._seen_rows

    def recover(self, released: Tensor) -> Tensor:
        params = self.parameters
        if len(released) == 0 or params is None:
            return released
        probs, _ = invert_reverse_sigmoid(released.cpu(), *params)
        return probs.to(released.device, released.dtype)

    def report(self) -> dict[str, float]:
        params = self.parameters
        out: dict[str, float] = {}
        if params is not None:
            out["label_mode/beta"], out["label_mode/gamma"] = params
        if not self.known:
            out["label_mode/estimated_from"] = float(self.estimate.rows if self.estimate else 0)
            if self.estimate is not None:  # the estimate's own error: the share of its rows it does not explain
                out["label_mode/estimate_misfit"] = self.estimate.misfit
                out["label_mode/estimate_used"] = float(params is not None)
                out["label_mode/estimate_beta"] = self.estimate.beta
                out["label_mode/estimate_gamma"] = self.estimate.gamma
        return out


@hookimpl
def register_label_modes(register):
    register("invert", Invert)


__all__ = ["Invert", "InvertOptions", "MAX_ESTIMATE_ROWS", "USABLE_MISFIT"]
