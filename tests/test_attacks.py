"""JBDA and random: batched Jacobian step, direction, exact query accounting, no in-place augmentation."""

import pytest
import torch
from torch import nn

from helpers import attack_context

from stealbench.attacks.base import class_balanced_indices
from stealbench.attacks.jbda import JBDA, jacobian_step
from stealbench.attacks.random import RandomSamples
from stealbench.errors import ConfigError

SHAPE = (1, 8, 8)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def test_jacobian_step_matches_a_per_sample_reference_and_keeps_inputs():
    net = tiny_net()
    x = torch.rand(37, *SHAPE, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (37,), generator=torch.Generator().manual_seed(1))
    original = x.clone()
    batched = jacobian_step(net, x, labels, 0.1, batch_size=16)
    assert torch.equal(x, original), "the step must not overwrite the originals"
    for i in range(len(x)):  # reference: one sample at a time
        xi = x[i:i + 1].clone().requires_grad_(True)
        torch.softmax(net(xi), -1)[0, labels[i]].backward()
        expected = (x[i:i + 1] + 0.1 * xi.grad.sign()).clamp(0, 1)
        torch.testing.assert_close(batched[i:i + 1], expected)
    assert batched.min() >= 0 and batched.max() <= 1


@pytest.mark.parametrize("direction,sign", [("towards", 1), ("away", -1)])
def test_step_direction_moves_the_label_probability(direction, sign):
    net = tiny_net().eval()
    x = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25  # no clipping
    labels = net(x).argmax(-1)
    attack = JBDA(direction=direction, lam=0.01)
    stepped = jacobian_step(net, x, labels, attack.step_size(1))
    before = torch.softmax(net(x), -1).gather(1, labels[:, None])
    after = torch.softmax(net(stepped), -1).gather(1, labels[:, None])
    assert ((after - before).sign() == sign).float().mean() > 0.95


@pytest.mark.parametrize("tau", [1, 2, 3, 5])
@pytest.mark.parametrize("direction,base", [("towards", 1.0), ("away", -1.0)])
def test_sign_period_follows_papernots_formula(tau, direction, base):
    # Papernot et al. 2017: lambda_rho = lambda * (-1)^floor(rho / tau), augmentations counted from rho = 0;
    # step_size takes the 1-based round after which the augmentation happens, so rho = round - 1.
    attack = JBDA(lam=0.1, sign_period=tau, direction=direction)
    for rho in range(12):
        assert attack.step_size(rho + 1) == base * 0.1 * (-1) ** (rho // tau), (tau, rho)
    assert attack.step_size(1) == base * 0.1, "the first augmentation always steps with +lambda (times direction)"


def test_no_sign_period_never_flips():
    attack = JBDA(lam=0.1, sign_period=None)
    assert {attack.step_size(r) for r in range(1, 20)} == {0.1}


def test_class_balanced_seed_selection():
    labels = torch.arange(10).repeat(20)
    idx = class_balanced_indices(labels, 3, 10, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(labels[idx]), torch.full((10,), 3))


def make_ctx(budget, pool=400, checkpoints=None):
    ctx, log = attack_context(budget, pool)
    if checkpoints is not None:
        ctx.checkpoint = lambda model, r, fresh: checkpoints.append((ctx.oracle.used, r))
    return ctx, log["trained"]


def test_jbda_doubles_each_round_and_stops_exactly_at_the_budget():
    points = []
    ctx, sizes = make_ctx(budget=700, checkpoints=points)
    JBDA(seed_per_class=5, rounds=6, epochs_per_round=1).run(ctx)
    assert sizes == [50, 100, 200, 400, 700]
    assert points == [(50, 1), (100, 2), (200, 3), (400, 4), (700, 5)]
    assert ctx.oracle.used == 700


def test_jbda_reservoir_grows_linearly():
    ctx, sizes = make_ctx(budget=10_000)
    JBDA(seed_per_class=5, rounds=6, reservoir_size=30, reservoir_start=3, epochs_per_round=1).run(ctx)
    assert sizes == [50, 100, 200, 230, 260, 290]


def test_jbda_refuses_a_budget_below_the_seed_set():
    with pytest.raises(ConfigError, match="smaller than the JBDA seed set"):
        JBDA(seed_per_class=10).validate(budget=50, num_classes=10, pool_size=500)


def test_random_attack_queries_exactly_the_budget_at_doubling_checkpoints():
    points = []
    ctx, sizes = make_ctx(budget=320, checkpoints=points)
    RandomSamples(num_checkpoints=4, epochs=1).run(ctx)
    assert sizes == [40, 80, 160, 320] and ctx.oracle.used == 320
    with pytest.raises(ConfigError, match="exceeds the attacker pool"):
        RandomSamples().validate(budget=1000, num_classes=10, pool_size=400)
