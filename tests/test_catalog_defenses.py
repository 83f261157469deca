"""Issue 4 defenses: labels, topk, rounding, noise, misinformation: their defining properties."""

import copy

import pytest
import torch
from torch import nn

from stealbench.defenses.base import DefenseSetup
from stealbench.defenses.labels import LabelsOnly
from stealbench.defenses.misinformation import AdaptiveMisinformation, sample_image_patches
from stealbench.defenses.noise import LogitNoise
from stealbench.defenses.rounding import Rounding, round_on_simplex
from stealbench.defenses.topk import TopK
from stealbench.errors import ConfigError
from stealbench.defender.oracle import check_probabilities


def probs(n=64, k=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g) * scale, -1)


X = torch.rand(64, 1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_releases_one_hot_of_the_argmax():
    p = probs()
    out = LabelsOnly()(X, p)
    check_probabilities(out, p, "labels")
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.sum(-1), torch.ones(len(p)))
    assert torch.equal(out.argmax(-1), p.argmax(-1))


@pytest.mark.parametrize("k", [1, 2, 3, 9, 10, 15])
def test_topk_keeps_the_k_largest_in_order_renormalised(k):
    p = probs()
    out = TopK(k=k)(X, p)
    check_probabilities(out, p, "topk")
    kk = min(k, p.shape[1])
    assert torch.equal((out > 0).sum(-1), torch.full((len(p),), kk))
    top_vals, top_idx = p.topk(kk, dim=-1)
    out_vals, out_idx = out.topk(kk, dim=-1)
    assert torch.equal(out_idx, top_idx)  # same classes, same order
    torch.testing.assert_close(out_vals, top_vals / top_vals.sum(-1, keepdim=True))


def test_topk_rejects_bad_k():
    with pytest.raises(ConfigError, match="defense.k"):
        TopK(k=0)


@pytest.mark.parametrize("decimals", [0, 1, 2, 4])
def test_rounding_stays_on_the_grid_and_the_simplex(decimals):
    p = probs(256)
    out = Rounding(decimals=decimals)(X, p)
    check_probabilities(out, p, "rounding")
    units = out.double() * 10**decimals
    torch.testing.assert_close(units, units.round(), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.double().sum(-1), torch.ones(len(p), dtype=torch.float64), atol=1e-6, rtol=0)
    assert ((out - p).abs() < 10.0**-decimals + 1e-6).all()


def test_rounding_largest_remainder_example():
    p = torch.tensor([[0.334, 0.333, 0.333]])
    assert torch.equal(round_on_simplex(p, 0), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(round_on_simplex(p, 1), torch.tensor([[0.4, 0.3, 0.3]]))
    with pytest.raises(ConfigError, match="decimals"):
        Rounding(decimals=-1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_noise_stays_within_its_logit_budget_and_is_random(norm):
    p = probs(200)
    defense = LogitNoise(eps=0.7, norm=norm, seed=3)
    out = defense(X[:1].expand(200, -1, -1, -1), p)
    check_probabilities(out, p, "noise")
    # log y' = log y + delta - c (c: the softmax normaliser); delta is recovered up to that row constant
    diff = out.double().log() - p.double().log()
    if norm == "l2":
        centred = diff - diff.mean(-1, keepdim=True)  # the smallest norm over all shifts c
        assert (centred.norm(dim=-1) <= 0.7 + 1e-6).all()
    else:
        spread = diff.max(-1).values - diff.min(-1).values
        assert (spread <= 2 * 0.7 + 1e-6).all()
    again = defense(X[:1].expand(200, -1, -1, -1), p)
    assert not torch.equal(out, again), "a randomised defense answers the same input differently"
    assert LogitNoise.randomized
    same_seed = LogitNoise(eps=0.7, norm=norm, seed=3)(X, p[:64])
    assert torch.equal(same_seed, LogitNoise(eps=0.7, norm=norm, seed=3)(X, p[:64]))
    copy.deepcopy(defense)  # the runner copies defenses to measure utility


def _quick_train(net, x, targets, epochs, log_name="defense"):
    """A plain-torch stand-in for DefenseSetup.train_model (no Lightning: keeps the test fast)."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = -(targets[idx] * torch.log_softmax(net(x[idx]), -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits_victim():
    from stealbench.data.digits import Digits

    s = Digits().splits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    net = _quick_train(net, s.victim_x, nn.functional.one_hot(s.victim_y, 10).float(), 15)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, s


def test_misinformation_mixes_in_wrong_answers_for_outliers_only(digits_victim):
    victim, s = digits_victim
    defense = AdaptiveMisinformation(epochs=12, train_size=None, outlier_weight=1.0, nu=50.0)
    defense.setup(DefenseSetup(victim=victim, train_x=s.victim_x, train_y=s.victim_y, num_classes=10,
                               input_shape=(1, 8, 8), device=torch.device("cpu"),
                               generator=torch.Generator().manual_seed(0), train_model=_quick_train))
    # the misinformation model is trained to be wrong
    mis = torch.softmax(defense.mis_net(s.eval_x), -1)
    assert mis.gather(1, s.eval_y[:, None]).mean() < 0.1
    assert (mis.argmax(-1) != s.eval_y).float().mean() > 0.85
    with torch.no_grad():
        clean = torch.softmax(victim(s.eval_x), -1)
    benign = copy.deepcopy(defense)(s.eval_x, clean)
    check_probabilities(benign, clean, "misinformation")
    benign_acc = (benign.argmax(-1) == s.eval_y).float().mean()
    victim_acc = (clean.argmax(-1) == s.eval_y).float().mean()
    assert benign_acc >= victim_acc - 0.08  # benign users keep most of the utility
    outliers = sample_image_patches(400, (1, 8, 8), torch.Generator().manual_seed(5))
    with torch.no_grad():
        out_clean = torch.softmax(victim(outliers), -1)
    defense(outliers, out_clean)
    flagged_ood = defense.report()["flagged"]
    fresh = copy.deepcopy(defense)
    fresh._flagged.zero_(), fresh._count.zero_()
    fresh(s.eval_x, clean)
    assert flagged_ood > 0.5 > fresh.report()["flagged"]


def test_misinformation_rejects_bad_options():
    with pytest.raises(ConfigError, match="defense.tau"):
        AdaptiveMisinformation(tau=2.0)
    with pytest.raises(ConfigError, match="defense.detector"):
        AdaptiveMisinformation(detector="maybe")
