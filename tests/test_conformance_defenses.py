"""The kit's newer defense rules (issue 18, item 4): each catches a broken defense defined here; the built-ins pass
(tests/test_conformance.py runs every registered one)."""

from __future__ import annotations

import pytest
import torch

from stealbench.defenses import Defense
from stealbench.errors import ConfigError
from stealbench.testing import DEFENSE_RULES, ConformanceError, check_defense


class TinyNoiseClaimsArgmax(Defense):
    """Adds noise of 1e-4 and claims to keep the top-1: true on every ordinary row, false on a near tie."""

    preserves_argmax = True
    randomized = True

    def forward(self, x, probs):
        noisy = probs + 1e-4 * torch.rand(probs.shape, dtype=probs.dtype, device=probs.device)
        return noisy / noisy.sum(-1, keepdim=True)


class CrashesOnFewClasses(Defense):
    """Keeps the 3 largest probabilities: topk(3) fails in a world of 2 classes with an IndexError-like error."""

    def forward(self, x, probs):
        values, indices = probs.topk(3, dim=-1)
        return torch.zeros_like(probs).scatter(-1, indices, values / values.sum(-1, keepdim=True))


class BadAnswersOnFewClasses(Defense):
    """Answers garbage (a row of zeros) when there are fewer than 3 classes."""

    def forward(self, x, probs):
        return probs if probs.shape[-1] >= 3 else torch.zeros_like(probs)


class RefusesFewClasses(Defense):
    """Refuses, at setup, a task with fewer classes than its k: a clear refusal passes."""

    def setup(self, context):
        if context.num_classes < 3:
            raise ConfigError(f"defense.k = 3 needs at least 3 classes, the task has {context.num_classes}")

    def forward(self, x, probs):
        values, indices = probs.topk(3, dim=-1)
        return torch.zeros_like(probs).scatter(-1, indices, values / values.sum(-1, keepdim=True))


class GrowingNoise(Defense):
    """Declares randomness but hides state: its noise grows with the number of queries it has answered."""

    randomized = True

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x, probs):
        self.seen += len(x)
        scale = 0.05 * (1 + self.seen / 500)
        noisy = probs.clamp_min(1e-12).log() + scale * torch.randn(probs.shape, dtype=probs.dtype)
        return torch.softmax(noisy, -1)


class SteadyNoise(GrowingNoise):
    """The same noise at a constant scale: no hidden state."""

    def forward(self, x, probs):
        noisy = probs.clamp_min(1e-12).log() + 0.05 * torch.randn(probs.shape, dtype=probs.dtype)
        return torch.softmax(noisy, -1)


@pytest.mark.parametrize("defense, rule", [
    (TinyNoiseClaimsArgmax, "argmax"), (CrashesOnFewClasses, "few-classes"),
    (BadAnswersOnFewClasses, "few-classes"), (GrowingNoise, "hidden-state"),
])
def test_new_defense_rules(defense, rule):
    assert rule in DEFENSE_RULES
    with pytest.raises(ConformanceError) as err:
        check_defense(defense)
    assert rule in err.value.rules and f"[{rule}]" in str(err.value) and defense.__name__ in str(err.value)


def test_the_tiny_gap_probes_catch_what_the_old_ones_missed():
    """The 1e-4 noise keeps the top-1 of every old probe row (near ties had a gap of 2e-3)."""
    with pytest.raises(ConformanceError) as err:
        check_defense(TinyNoiseClaimsArgmax)
    assert "gap" in str(err.value)  # the failing rows are the tiny-gap ones
    assert set(err.value.rules) == {"argmax"}


@pytest.mark.parametrize("defense", [RefusesFewClasses, SteadyNoise])
def test_clear_refusals_and_honest_noise_pass(defense):
    check_defense(defense)


def test_the_hidden_state_tolerance_comes_from_the_noise():
    from stealbench.testing.defense_probes import HIDDEN_REPEATS, _drift

    g = torch.Generator().manual_seed(0)
    steady = torch.randn(HIDDEN_REPEATS, 3, generator=g, dtype=torch.float64)
    assert _drift(steady) is None and _drift(torch.zeros(HIDDEN_REPEATS, 3)) is None
    drifting = steady + torch.linspace(0, 8, HIDDEN_REPEATS, dtype=torch.float64)[:, None]
    assert _drift(drifting) is not None
