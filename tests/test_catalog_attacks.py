"""Issue 4 attacks: JBDA variants, knockoff (random/adaptive), activethief; exact query counts; --pool_data."""

import math

import pytest
import torch
from torch import nn

from helpers import attack_context

from stealbench.attacks.activethief import ActiveThief, deepfool_distances, kcenter_greedy
from stealbench.attacks.jbda import jacobian_step
from stealbench.attacks.jbda_variants import TRND, JBTopK, random_other_classes, topk_other_classes
from stealbench.attacks.knockoff import GradientBandit, Knockoff, certainty_reward, diversity_reward, loss_reward
from stealbench.defenses.labels import LabelsOnly
from stealbench.errors import ConfigError
from stealbench.pools import check_disjoint, match_shape

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def make_ctx(budget, pool=400, defense=None, pool_classes=10, pool_labels=None):
    return attack_context(budget, pool, defense, classes=pool_classes, pool_labels=pool_labels)


# -- JBDA variants ---------------------------------------------------------------------------------------------------
def test_topk_other_classes_are_the_surrogates_most_probable_excluding_the_label():
    net = tiny_net().eval()
    x = torch.rand(50, *SHAPE)
    labels = torch.randint(0, 10, (50,))
    targets = topk_other_classes(net, x, labels, 3)
    logits = net(x).detach().scatter(1, labels[:, None], float("-inf"))
    assert torch.equal(targets, logits.topk(3, dim=1).indices)
    assert not (targets == labels[:, None]).any()


def test_trnd_targets_are_uniform_over_the_other_classes():
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(0))
    targets = random_other_classes(labels, 10, torch.Generator().manual_seed(1))
    assert not (targets == labels).any()
    counts = torch.bincount((targets - labels) % 10, minlength=10)
    assert counts[0] == 0 and (counts[1:].float() / len(labels) - 1 / 9).abs().max() < 0.01


@pytest.mark.parametrize("attack", [JBTopK(k=2, lam=0.01, method="fgsm"), TRND(lam=0.01, method="fgsm")])
def test_targeted_variants_step_towards_their_target_class(attack):
    # the one-step rule (`method: fgsm`, the default before issue 18; the PGD default is in test_jbda_variants.py)
    net = tiny_net().eval()
    x = torch.rand(300, *SHAPE, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25  # no clipping
    labels = net(x).argmax(-1)
    ctx, _ = make_ctx(budget=10)
    ctx.generator.manual_seed(7)
    new_x = attack.augment(net, x, labels, 1, ctx)
    per = attack.new_per_source(10)
    assert len(new_x) == per * len(x)
    # the same targets, recomputed: each new point is exactly clip(x + lam * sign(grad F_target)), bit for bit
    if isinstance(attack, JBTopK):
        targets = topk_other_classes(net, x, labels, 2).flatten()
    else:
        targets = random_other_classes(labels, 10, torch.Generator().manual_seed(7))
    source = x.repeat_interleave(per, dim=0)
    assert torch.equal(new_x, jacobian_step(net, source, targets, 0.01))
    before = torch.softmax(net(source), -1).gather(1, targets[:, None])
    after = torch.softmax(net(new_x), -1).gather(1, targets[:, None])
    assert (after > before).float().mean() > 0.95  # towards the target
    own_before = torch.softmax(net(source), -1).gather(1, labels.repeat_interleave(per)[:, None])
    own_after = torch.softmax(net(new_x), -1).gather(1, labels.repeat_interleave(per)[:, None])
    assert (own_after < own_before).float().mean() > 0.5  # and mostly away from the label


@pytest.mark.parametrize("budget,expected", [(50, [50]), (120, [50, 120]), (200, [50, 200]), (700, [50, 200, 700])])
def test_jbda_topk_query_accounting_is_exact(budget, expected):
    ctx, log = make_ctx(budget=budget)
    JBTopK(k=3, seed_per_class=5, rounds=3, epochs_per_round=1).run(ctx)
    assert log["trained"] == expected and log["points"] == expected
    assert ctx.oracle.used == expected[-1] <= budget


def test_trnd_doubles_like_jbda_and_stops_at_the_budget():
    ctx, log = make_ctx(budget=333)
    TRND(seed_per_class=5, rounds=6, epochs_per_round=1).run(ctx)
    assert log["trained"] == [50, 100, 200, 333] and ctx.oracle.used == 333


@pytest.mark.parametrize("cls", [JBTopK, TRND])
@pytest.mark.parametrize("option,value", [("sign_period", 2), ("direction", "away")])
def test_targeted_variants_reject_the_sign_options_they_ignore(cls, option, value):
    # their steps are always +lambda towards the target; a sign schedule would be silently ignored
    with pytest.raises(ConfigError, match=f"attack.{option}"):
        cls(**{option: value})


def test_jbda_topk_validates_k():
    with pytest.raises(ConfigError, match="attack.k"):
        JBTopK(k=0)
    with pytest.raises(ConfigError, match="attack.k"):
        JBTopK(k=10).validate(budget=500, num_classes=10, pool_size=500)


# -- knockoff --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["random", "adaptive"])
@pytest.mark.parametrize("budget", [1, 37, 300])
def test_knockoff_query_accounting_is_exact(policy, budget):
    ctx, log = make_ctx(budget=budget)
    attack = Knockoff(policy=policy, num_checkpoints=3, epochs=1, batch_size=16)
    attack.validate(budget=budget, num_classes=10, pool_size=400)
    attack.run(ctx)
    assert ctx.oracle.used == budget
    assert log["points"] == attack.schedule(budget) == log["trained"]


def test_knockoff_adaptive_never_queries_an_image_twice_and_uses_every_pool_image_at_most_once():
    ctx, _ = make_ctx(budget=400, pool=400, pool_classes=7)  # the whole pool, uneven classes
    seen = []
    query = ctx.oracle.query
    ctx.oracle.query = lambda x: (seen.append(x.clone()), query(x))[1]
    Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=64).run(ctx)
    images = torch.cat(seen)
    assert len(images) == 400 and len(torch.unique(images.flatten(1), dim=0)) == 400


def test_knockoff_adaptive_rewards_are_finite_even_for_degenerate_answers():
    one_hot = torch.eye(10)[torch.randint(0, 10, (50,))].double()
    for answers in (one_hot, torch.full((50, 10), 0.1, dtype=torch.float64)):
        assert torch.isfinite(certainty_reward(answers)).all()
        assert torch.isfinite(diversity_reward(answers, answers.mean(0))).all()
        assert torch.isfinite(loss_reward(answers, 1 - one_hot)).all()  # surrogate gives the answer's class 0
    bandit = GradientBandit(5, step=1e6)  # absurd step: preferences must stay finite
    available = torch.tensor([True, True, False, True, True])
    for _ in range(20):
        bandit.update(torch.tensor([0, 1, 3]), torch.tensor([float("inf"), float("nan"), 1e30]), available)
        pi = bandit.probs(available)
        assert torch.isfinite(bandit.h).all() and torch.isfinite(pi).all() and pi[2] == 0
    # a whole run against a labels-only defense (one-hot answers): every logged reward is finite
    ctx, _ = make_ctx(budget=200, defense=LabelsOnly())
    attack = Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=20)
    attack.run(ctx)
    assert attack._reward_log and all(math.isfinite(v) for step in attack._reward_log for v in step.values())


def test_gradient_bandit_prefers_the_rewarded_arm():
    bandit = GradientBandit(4, step=0.5)
    available = torch.ones(4, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        arms = torch.multinomial(bandit.probs(available).float(), 32, replacement=True, generator=g)
        bandit.update(arms, (arms == 2).double(), available)
    assert bandit.probs(available).argmax() == 2


def test_knockoff_rejects_bad_options():
    with pytest.raises(ConfigError, match="attack.policy"):
        Knockoff(policy="greedy")
    with pytest.raises(ConfigError, match="attack.rewards"):
        Knockoff(rewards=["certainty", "fun"])
    with pytest.raises(ConfigError, match="exceeds the attacker pool"):
        Knockoff().validate(budget=500, num_classes=10, pool_size=400)


# -- activethief -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["random", "uncertainty", "kcenter", "uncertainty-kcenter", "dfal",
                                      "dfal-kcenter"])
def test_activethief_query_accounting_is_exact(strategy):
    ctx, log = make_ctx(budget=103)
    ActiveThief(strategy=strategy, rounds=3, epochs=1, val_fraction=0).run(ctx)  # no split: trains on all
    assert log["trained"] == [25, 51, 77, 103] == log["points"]
    assert ctx.oracle.used == 103


def test_kcenter_greedy_picks_far_points_first():
    centers = torch.zeros(1, 2)
    candidates = torch.tensor([[0.1, 0.0], [5.0, 0.0], [5.1, 0.0], [0.0, 3.0]])
    assert kcenter_greedy(candidates, centers, 2).tolist() == [2, 3]  # farthest, then farthest from both


def test_deepfool_on_a_linear_model_is_the_distance_to_the_nearest_hyperplane():
    torch.manual_seed(0)
    linear = nn.Linear(64, 10)
    net = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(1))
    # analytic: min over k != c of |w_k.x + b_k - w_c.x - b_c| / ||w_k - w_c||, c the predicted class (float64)
    w, b = linear.weight.detach().double(), linear.bias.detach().double()
    logits = x.flatten(1).double() @ w.T + b
    c = logits.argmax(-1)
    gap = (logits - logits.gather(1, c[:, None])).abs()
    norms = (w[None, :, :] - w[c][:, None, :]).norm(dim=-1)
    expected = (gap / norms).scatter(1, c[:, None], float("inf")).min(1).values
    got = deepfool_distances(net, x, max_floats=64 * 10 * 37)  # chunks of 37 images: chunking changes nothing
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)


def test_deepfool_ranks_points_that_never_flip_last():
    dead = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nn.init.zeros_(dead[1].weight)  # no input gradient: no boundary DeepFool could step to
    assert torch.isinf(deepfool_distances(dead, torch.rand(5, *SHAPE), max_iter=3)).all()


def test_dfal_picks_the_pool_images_nearest_the_surrogates_boundary():
    # two classes split by the hyperplane x_0 = 0.5 (x_0: the first pixel): logit gap 2 x_0 - 1, distance |x_0 - 0.5|
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0, 0], net[1].weight[1, 0] = 1.0, -1.0
        net[1].bias.copy_(torch.tensor([-0.5, 0.5]))
    pool = torch.full((12, *SHAPE), 0.3)
    offsets = torch.tensor([0.40, -0.05, 0.30, 0.01, -0.20, 0.45, -0.02, 0.10, -0.35, 0.03, 0.25, -0.15])
    pool[:, 0, 0, 0] = 0.5 + offsets
    unlabeled = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11])  # 3 (the nearest) is already queried
    labeled = torch.tensor([3])
    g = torch.Generator().manual_seed(0)
    picked = ActiveThief(strategy="dfal").select(net, pool, unlabeled, labeled, 3, g)
    assert sorted(picked.tolist()) == [1, 6, 9]  # |offset| 0.05, 0.02, 0.03
    # dfal-kcenter: k-center over the 2 x 3 closest unqueried images only (offsets 0.02 .. 0.15)
    picked = ActiveThief(strategy="dfal-kcenter", candidates_factor=2).select(net, pool, unlabeled, labeled, 3, g)
    assert len(set(picked.tolist())) == 3 and set(picked.tolist()) <= {1, 6, 9, 7, 11, 4}


def test_activethief_rejects_bad_options():
    with pytest.raises(ConfigError, match="attack.strategy"):
        ActiveThief(strategy="bald")
    with pytest.raises(ConfigError, match="attack.deepfool_max_iter"):
        ActiveThief(strategy="dfal", deepfool_max_iter=0)
    with pytest.raises(ConfigError, match="attack.deepfool_overshoot"):
        ActiveThief(strategy="dfal", deepfool_overshoot=-0.1)
    with pytest.raises(ConfigError, match="attack.initial"):
        ActiveThief(initial=500).validate(budget=100, num_classes=10, pool_size=400)


# -- pools from another data set -----------------------------------------------------------------------------------
def test_pool_images_are_converted_to_the_victims_input_shape():
    x = torch.rand(5, 1, 28, 28)
    assert match_shape(x, (1, 8, 8)).shape == (5, 1, 8, 8)
    assert match_shape(x, (3, 32, 32)).shape == (5, 3, 32, 32)
    rgb = torch.rand(5, 3, 32, 32)
    small = match_shape(rgb, (1, 28, 28))
    assert small.shape == (5, 1, 28, 28) and small.min() >= 0 and small.max() <= 1


def test_a_pool_that_shares_images_with_the_evaluation_set_is_refused():
    eval_x = torch.rand(50, *SHAPE)
    check_disjoint(torch.rand(100, *SHAPE), eval_x)
    with pytest.raises(ConfigError, match="also appear in the evaluation set"):
        check_disjoint(torch.cat([torch.rand(10, *SHAPE), eval_x[3:4]]), eval_x)
