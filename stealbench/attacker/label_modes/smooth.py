"""`smooth` and `average`: ask each image several times and combine the answers (every repeat is a query).

`smooth` repeats the same image (against randomised defenses, whose noise averages out); `average` adds a small
random input change to every repeat (against defenses whose answer depends sharply on the exact input, and to
average a deterministic perturbation over a neighbourhood).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ... import hookimpl
from .base import ALL, LabelMode, check_choice, check_number


@dataclass
class SmoothOptions:
    #: answers averaged per image (each one is a query)
    samples: int = 5
    #: average log-probabilities (`log`, geometric mean: undoes zero-mean logit noise) or probabilities
    average: Literal["log", "probs"] = "log"
    #: train on the averaged probabilities (`soft`) or their argmax (`hard`)
    then: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        check_number("samples", self.samples, minimum=1, integer=True)
        check_choice("average", self.average, ("log", "probs"))
        check_choice("then", self.then, ("soft", "hard"))


def combine(answers: Tensor, average: str) -> Tensor:
    """(n, k, K) answers -> (n, K): their geometric (`log`) or arithmetic (`probs`) mean."""
    answers = answers.double()
    if average == "log":
        return torch.softmax(answers.clamp_min(1e-12).log().mean(1), dim=-1)
    return answers.mean(1)


class Smooth(LabelMode):
    """query each image `samples` times and average the answers (against randomised defenses)"""

    answers = ("noise",)
    Options = SmoothOptions

    @property
    def queries_per_image(self) -> int:
        return self.options.samples

    def perturb(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x

    def ask(self, oracle, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, k = len(x), self.queries_per_image
        repeats = self.perturb(x.repeat_interleave(k, dim=0), generator)
        answers = oracle.query(repeats).view(n, k, -1)
        return combine(answers, self.options.average).to(x.dtype if x.is_floating_point() else torch.float32)


@dataclass
class AverageOptions:
    #: queries per image, each with its own small input change (each one is a query)
    k: int = 4
    #: standard deviation of the Gaussian input change, in pixel units ([0, 1] images; clipped back into [0, 1])
    scale: float = 0.02
    #: average probabilities (`probs`) or log-probabilities (`log`, geometric mean)
    average: Literal["log", "probs"] = "probs"
    #: train on the averaged probabilities (`soft`) or their argmax (`hard`)
    then: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        check_number("k", self.k, minimum=1, integer=True)
        check_number("scale", self.scale, minimum=0)
        check_choice("average", self.average, ("log", "probs"))
        check_choice("then", self.then, ("soft", "hard"))


class Average(Smooth):
    """query each image `k` times with small random input changes (Gaussian, std `scale`) and average the answers"""

    answers = ALL
    Options = AverageOptions

    @property
    def queries_per_image(self) -> int:
        return self.options.k

    def perturb(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.options.scale == 0:
            return x
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
        return (x + self.options.scale * noise).clamp(0, 1)


@hookimpl
def register_label_modes(register):
    register("smooth", Smooth)
    register("average", Average)


__all__ = ["Average", "AverageOptions", "Smooth", "SmoothOptions", "combine"]
