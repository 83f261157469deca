"""Tests of the MAD plugin: the optimisation, the gradient Gram matrices, conformance and registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealbench.testing import TinyWorld, check_defense, make_defense_setup
from stealbench_mad import MAD, MADArgmax, gram_last_layer, mad_perturb


def random_probs(n: int = 64, k: int = 10, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * scale, -1)


def random_gram(n: int, k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, k, 30, generator=g, dtype=torch.float64)
    return jac @ jac.transpose(1, 2)


def cosine(gram: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    uv = torch.einsum("bk,bkl,bl->b", u, gram, v)
    uu = torch.einsum("bk,bkl,bl->b", u, gram, u)
    vv = torch.einsum("bk,bkl,bl->b", v, gram, v)
    return uv / (uu * vv).sqrt()


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_released_answers_stay_in_the_ball_on_the_simplex(norm, eps):
    y = random_probs()
    out = mad_perturb(y, random_gram(len(y), y.shape[1]), eps, norm=norm)
    dist = (out - y).abs().sum(-1) if norm == "l1" else (out - y).norm(dim=-1)
    assert (dist <= eps + 1e-9).all()
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(len(y), dtype=out.dtype))


def test_it_picks_the_most_deviating_vertex_direction():
    """Brute force over the K candidate directions, one sample at a time, agrees with the batched choice."""
    y, eps = random_probs(32), 0.6
    gram = random_gram(32, 10)
    out = mad_perturb(y, gram, eps)
    achieved = cosine(gram, y, out)
    for k in range(10):
        step = 2 * (1 - y[:, k:k + 1])
        alpha = (eps / step).clamp(max=1)
        candidate = (1 - alpha) * y + alpha * torch.nn.functional.one_hot(torch.tensor(k), 10)
        assert (achieved <= cosine(gram, y, candidate) + 1e-9).all()
    assert (achieved < 1 - 1e-6).all()  # it really deviates


def test_zero_epsilon_releases_the_clean_answer():
    y = random_probs()
    assert torch.allclose(mad_perturb(y, random_gram(len(y), 10), 0.0), y)


def test_argmax_preserving_keeps_the_top1_even_for_near_ties():
    y = random_probs(256, scale=0.5)  # flat answers: the top-1 is easy to flip
    gram = random_gram(256, 10)
    free = mad_perturb(y, gram, 1.0)
    kept = mad_perturb(y, gram, 1.0, argmax_preserving=True)
    assert (free.argmax(-1) != y.argmax(-1)).any()  # the unconstrained variant does flip some
    assert torch.equal(kept.argmax(-1), y.argmax(-1))


def test_last_layer_gram_matches_autograd():
    """The closed form equals the Gram matrix of autograd gradients w.r.t. the final linear layer (up to scale)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    x = torch.rand(3, 1, 8, 8)
    last = net[-1]
    for i in range(3):
        logp = torch.log_softmax(net(x[i:i + 1]), -1)[0]
        rows = []
        for k in range(5):
            gw, gb = torch.autograd.grad(logp[k], (last.weight, last.bias), retain_graph=True)
            rows.append(torch.cat([gw.flatten(), gb]))
        jac = torch.stack(rows).double()
        expected = jac @ jac.T
        closed = gram_last_layer(torch.softmax(net(x[i:i + 1]), -1).double())[0]
        scale = expected[0, 0] / closed[0, 0]
        assert torch.allclose(closed * scale, expected, rtol=1e-4, atol=1e-8)


def test_full_gram_matches_autograd():
    defense = MAD(gradient="full", proxy_arch="mlp")
    defense.setup(make_defense_setup())
    x = torch.rand(2, 1, 8, 8)
    gram = defense.gram(x)
    proxy = defense._proxy
    params = [p for p in proxy.parameters()]
    for i in range(2):
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            logp = torch.log_softmax(proxy(x[i:i + 1]), -1)[0]
            rows = [torch.cat([g.flatten() for g in torch.autograd.grad(logp[k], params, retain_graph=True)])
                    for k in range(10)]
        jac = torch.stack(rows).double()
        assert torch.allclose(gram[i], jac @ jac.T, rtol=1e-3, atol=1e-6)


def test_setup_is_deterministic_and_trained_proxy_works():
    world = TinyWorld()
    a, b = MAD(proxy="trained", proxy_epochs=1), MAD(proxy="trained", proxy_epochs=1)
    a.setup(make_defense_setup(world))
    b.setup(make_defense_setup(world))
    x = torch.rand(8, 1, 8, 8)
    p = torch.softmax(torch.randn(8, 10), -1)
    assert torch.equal(a(x, p), b(x, p))


def test_bad_options_fail_clearly():
    from stealbench.errors import ConfigError

    with pytest.raises(ConfigError, match="epsilon"):
        MAD(epsilon=3)
    with pytest.raises(ConfigError, match="norm"):
        MAD(norm="linf")


@pytest.mark.parametrize("key", ["mad", "mad-argmax"])
def test_conformance(key):
    check_defense(key)


def test_registered_through_the_entry_point():
    from stealbench.plugins import get_catalog

    catalog = get_catalog()
    assert catalog.defenses.get("mad") is MAD and catalog.defenses.get("mad-argmax") is MADArgmax
    (info,) = [p for p in catalog.plugins if p.name == "mad"]
    assert info.distribution == "stealbench-mad"
    assert info.registered["defenses"] == ["mad", "mad-argmax"]
