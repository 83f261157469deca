"""The oracle: exact query accounting, budget, input validation, defense output validation."""

import pytest
import torch
from torch import nn

from stealbench.defenses.base import Defense
from stealbench.defenses.deceptive import DeceptivePerturbation
from stealbench.defenses.none import NoDefense
from stealbench.errors import BudgetExceededError, DefenseOutputError, OracleInputError
from stealbench.defender.oracle import Oracle

SHAPE = (1, 8, 8)


def make_oracle(defense=None, budget=100):
    torch.manual_seed(0)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return Oracle(victim, defense or NoDefense(), budget=budget, input_shape=SHAPE, num_classes=10, batch_size=16)


def images(n):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(n))


def test_counts_every_image_and_answers_probabilities():
    oracle = make_oracle()
    out = oracle.query(images(40))
    assert out.shape == (40, 10)
    torch.testing.assert_close(out.sum(-1), torch.ones(40))
    oracle.query(images(7))
    assert oracle.used == 47 and oracle.remaining == 53


def test_never_answers_past_the_budget():
    oracle = make_oracle(budget=50)
    oracle.query(images(45))
    with pytest.raises(BudgetExceededError, match="5 of 50"):
        oracle.query(images(6))
    assert oracle.used == 45  # the refused query was not counted or answered
    oracle.query(images(5))
    assert oracle.remaining == 0


@pytest.mark.parametrize("bad,message", [
    (torch.rand(4, 1, 28, 28), "shaped"),
    (torch.randint(0, 255, (4, *SHAPE), dtype=torch.uint8), "dtype"),
    (torch.rand(4, *SHAPE) * 255, "pixel-space"),
    (torch.rand(4, *SHAPE) - 0.5, "pixel-space"),
    ([[0.0]], "torch.Tensor"),
])
def test_rejects_bad_inputs(bad, message):
    oracle = make_oracle()
    with pytest.raises(OracleInputError, match=message):
        oracle.query(bad)
    assert oracle.used == 0


class Broken(Defense):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x, probs):
        if self.mode == "shape":
            return probs[:, :5]
        if self.mode == "sum":
            return probs * 2
        if self.mode == "nan":
            return probs * float("nan")
        return probs.double()


@pytest.mark.parametrize("mode,message", [("shape", "shape"), ("sum", "sum to 1"), ("nan", "NaN"),
                                          ("dtype", "dtype")])
def test_rejects_defense_output_that_is_not_a_probability_vector(mode, message):
    oracle = make_oracle(Broken(mode))
    with pytest.raises(DefenseOutputError, match=message):
        oracle.query(images(3))


def test_statistics_accumulate_over_queries():
    oracle = make_oracle(DeceptivePerturbation(1.0, 0.5))
    oracle.query(images(20))
    stats = oracle.stats()
    assert set(stats) == {"oracle/kl_nats", "oracle/kl_nats_rev", "oracle/l1", "oracle/top1_changed"}
    assert stats["oracle/kl_nats"] > 0 and stats["oracle/l1"] > 0
    assert make_oracle().stats() == {}


class SharpensInPlace(Defense):
    def forward(self, x, probs):
        probs.pow_(2)
        return probs / probs.sum(-1, keepdim=True)


def test_an_in_place_edit_is_refused_and_the_record_stays_clean():
    """Before the guard, an in-place edit made every oracle/* statistic read 0.0 (clean == released)."""
    oracle = make_oracle(SharpensInPlace())
    x = images(5)
    x_before = x.clone()
    with pytest.raises(DefenseOutputError, match=r"broke rule \[inputs-unchanged\].*probabilities"):
        oracle.query(x)
    assert torch.equal(x, x_before) and oracle.used == 0 and oracle.stats() == {}


def test_the_same_transform_out_of_place_is_answered_and_measured():
    class Sharpens(Defense):
        def forward(self, x, probs):
            squared = probs ** 2
            return squared / squared.sum(-1, keepdim=True)

    oracle = make_oracle(Sharpens())
    oracle.query(images(20))
    assert oracle.stats()["oracle/kl_nats"] > 0


def test_a_false_argmax_claim_names_the_rule():
    class Reverses(Defense):
        preserves_argmax = True

        def forward(self, x, probs):
            return probs.flip(-1)

    with pytest.raises(DefenseOutputError, match=r"broke rule \[argmax\]"):
        make_oracle(Reverses()).query(images(4))


def test_the_attackers_oracle_is_a_handle_on_a_channel_only():
    """What an attack holds: a channel and counters; no victim, no defense (the snooping attack in
    test_fair_comparisons.py shows the whole process holds none either)."""
    from stealbench.attacker.remote import RemoteOracle

    calls = []

    class Recorder:
        def call(self, op, **args):
            calls.append(op)
            return {"answers": torch.full((len(args["x"]), 10), 0.1), "used": len(args["x"])}

        def notify(self, op, **args):
            pass

    remote = RemoteOracle(Recorder(), budget=10, input_shape=SHAPE, num_classes=10)
    assert remote.query(images(3)).shape == (3, 10) and remote.used == 3 and remote.remaining == 7
    assert calls == ["query"]
    assert not any(isinstance(v, (nn.Module, Defense)) for v in vars(remote).values())
