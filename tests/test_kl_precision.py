"""KL statistics of a confident victim: float64 log-probabilities from the logits, not a floored float32 softmax."""

import math

import torch
from torch import nn

from stealbench.defender.oracle import Oracle
from stealbench.defenses.deceptive import DeceptivePerturbation, reverse_sigmoid
from stealbench.metrics import DefenseStats, kl_nats

# a margin of 120 nats: the float32 softmax of the other classes is exactly 0 (exp(-120) ~ 8e-53 < 1.4e-45)
LOGITS = torch.tensor([[120.0] + [0.0] * 9, [0.0, 0.0, 118.0] + [1.0] * 7])


def _reference(logits, released):
    """KL(y||y'), KL(y'||y) computed by hand in float64 from the logits and the released answer."""
    log_y = torch.log_softmax(logits.double(), -1)
    y, rel = log_y.exp(), released.double()
    kl = (y * (log_y - rel.log())).sum(-1).mean()
    kl_rev = (rel * (rel.log() - log_y)).sum(-1).mean()
    return float(kl), float(kl_rev)


def test_confident_victim_underflows_in_float32():
    clean = torch.softmax(LOGITS, -1)
    assert (clean == 0).any()  # the premise of the test


def test_stats_use_the_victims_log_probabilities():
    clean = torch.softmax(LOGITS, -1)
    released = reverse_sigmoid(clean, 1.0, 0.1)
    stats = DefenseStats()
    stats.update(clean, released, torch.log_softmax(LOGITS.double(), -1))
    got = stats.compute("defense/")
    kl, kl_rev = _reference(LOGITS, released)
    assert math.isclose(got["defense/kl_nats"], kl, rel_tol=1e-5)
    assert math.isclose(got["defense/kl_nats_rev"], kl_rev, rel_tol=1e-5)
    # about 0.9 * 120 nats, far above the ~25 nats a 1e-12 floor would make of log y
    assert got["defense/kl_nats_rev"] > 90
    floored = DefenseStats()
    floored.update(clean, released)  # without log-probabilities: float32 y, floored
    assert floored.compute("d/")["d/kl_nats_rev"] < 30


def test_oracle_statistics_come_from_the_logits():
    class Confident(nn.Module):
        def forward(self, x):
            return LOGITS[: len(x)] * x.flatten(1).mean(1, keepdim=True).clamp_min(1.0)  # ones -> LOGITS

    oracle = Oracle(Confident(), DeceptivePerturbation(1.0, 0.1), budget=10, input_shape=(1, 2, 2), num_classes=10)
    released = oracle.query(torch.ones(2, 1, 2, 2))
    kl, kl_rev = _reference(LOGITS, released)
    stats = oracle.stats()
    assert math.isclose(stats["oracle/kl_nats"], kl, rel_tol=1e-5)
    assert math.isclose(stats["oracle/kl_nats_rev"], kl_rev, rel_tol=1e-5)


def test_floor_only_where_released_is_exactly_zero():
    p = torch.tensor([[0.5, 0.5]])
    # a released zero where the clean answer had mass: finite thanks to the floor
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-12)
    assert math.isclose(float(kl_nats(p, torch.tensor([[1.0, 0.0]]))), expected)
    # a tiny but nonzero released value is used as it is, not raised to the floor
    tiny = torch.tensor([[1.0 - 1e-20, 1e-20]], dtype=torch.float64)
    assert math.isclose(float(kl_nats(p, tiny)), 0.5 * math.log(0.5 / (1 - 1e-20)) + 0.5 * math.log(0.5 / 1e-20))
    # zero clean mass contributes nothing (0 log 0 = 0)
    assert float(kl_nats(torch.tensor([[1.0, 0.0]]), p)) == math.log(2.0)
