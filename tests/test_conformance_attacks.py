"""The kit's newer attack rules (issue 18, item 4): each catches a broken attack defined here; the built-ins pass
(tests/test_conformance.py runs every registered one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealbench.attacks import Attack
from stealbench.testing import ATTACK_RULES, ConformanceError, check_attack


class _Good(Attack):
    def run(self, ctx):
        x = ctx.pool_x[:50]
        model = ctx.train(ctx.new_surrogate(), x, ctx.to_targets(ctx.oracle.query(x)), 1)
        ctx.checkpoint(model, 1, True)
        return model


class RawAnswers(Attack):
    """Trains on the released answers themselves: passes under soft labels, not under hard ones."""

    def run(self, ctx):
        x = ctx.pool_x[:50]
        answers = ctx.oracle.query(x)
        ctx.to_targets(answers)  # called, but its result is thrown away
        model = ctx.train(ctx.new_surrogate(), x, answers, 1)
        ctx.checkpoint(model, 1, True)
        return model


class NeverTargets(Attack):
    """Queries but never turns the answers into targets (trains with its own step loop on the raw answers)."""

    def run(self, ctx):
        x = ctx.pool_x[:50]
        ctx.oracle.query(x)
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class RoundZero(_Good):
    def run(self, ctx):
        model = super().run(ctx)
        ctx.checkpoint(model, 0, False)  # after round 1: neither from 1 nor increasing
        return model


class StartsAtZero(Attack):
    def run(self, ctx):
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 0, True)
        return model


class SameRoundTwice(_Good):
    def run(self, ctx):
        model = super().run(ctx)
        ctx.checkpoint(model, 1, False)
        return model


class OwnNet(Attack):
    """Checkpoints (and returns) a network of its own instead of ctx.new_surrogate()'s."""

    def run(self, ctx):
        x = ctx.pool_x[:50]
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, ctx.num_classes))
        model = ctx.train(net, x, ctx.to_targets(ctx.oracle.query(x)), 1)
        ctx.checkpoint(model, 1, True)
        return model


class ReturnsOwnNet(_Good):
    def run(self, ctx):
        super().run(ctx)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, ctx.num_classes))


@pytest.mark.parametrize("attack, rule", [
    (RawAnswers, "label-mode"), (NeverTargets, "label-mode"), (RoundZero, "rounds"), (StartsAtZero, "rounds"),
    (SameRoundTwice, "rounds"), (OwnNet, "surrogate"), (ReturnsOwnNet, "surrogate"),
])
def test_new_attack_rules(attack, rule):
    assert rule in ATTACK_RULES
    with pytest.raises(ConformanceError) as err:
        check_attack(attack)
    assert rule in err.value.rules and f"[{rule}]" in str(err.value) and attack.__name__ in str(err.value)


def test_the_surrogate_rule_says_what_a_run_says():
    with pytest.raises(ConformanceError) as err:
        check_attack(OwnNet)
    assert "ctx.checkpoint got a model that is not the run's surrogate architecture (build it with " \
           "ctx.new_surrogate())" in str(err.value)


def test_raw_answers_pass_under_soft_labels_alone():
    """What the hard-label run adds: under soft labels the raw answers are the targets."""
    from stealbench.testing.attacks import _label_mode_problem

    answers = torch.softmax(torch.randn(5, 10), -1)
    assert _label_mode_problem("soft", [answers], [answers], 5, 10) is None
    hard = torch.nn.functional.one_hot(answers.argmax(-1), 10).float()
    assert "did not return" in _label_mode_problem("hard", [hard], [answers], 5, 10)


class SeedLabels(Attack):
    """Trains on the labelled seed set's own (one-hot) labels as well as on ctx.to_targets: allowed."""

    def run(self, ctx):
        seed_x, seed_y = ctx.seed_set(2)
        x = ctx.pool_x[:50]
        targets = torch.cat([torch.nn.functional.one_hot(seed_y, ctx.num_classes).float(),
                             ctx.to_targets(ctx.oracle.query(x))])
        model = ctx.train(ctx.new_surrogate(), torch.cat([seed_x, x]), targets, 1)
        ctx.checkpoint(model, 1, True)
        return model


@pytest.mark.parametrize("attack", [_Good, SeedLabels])
def test_a_well_behaved_attack_passes_every_label_mode(attack):
    check_attack(attack)
