"""GRAD²: answers stay in the L1 ball on the simplex, and the chosen answer is the best feasible one for the
redirection objective, checked independently (a dense LP, per-sample autograd loops, the last-layer closed form)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from stealbench.defenses.grad2 import GradientRedirection, redirect
from stealbench.errors import ConfigError
from stealbench.testing import check_defense
from stealbench.testing.world import TinyWorld, make_defense_setup


def lp_optimum(y: np.ndarray, c: np.ndarray, eps: float) -> float:
    """max c . y' over the simplex with ||y' - y||_1 <= eps: variables (y', d), d >= |y' - y|, sum d <= eps."""
    k = len(y)
    eye = np.eye(k)
    a_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, k)), np.ones((1, k))]])
    b_ub = np.concatenate([y, -y, [eps]])
    a_eq = np.concatenate([np.ones(k), np.zeros(k)])[None]
    res = linprog(np.concatenate([-c, np.zeros(k)]), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0],
                  bounds=[(0, None)] * (2 * k), method="highs")
    assert res.success
    return -res.fun


def random_feasible(y: torch.Tensor, eps: float, n: int, g: torch.Generator) -> torch.Tensor:
    """n points of the simplex within L1 eps of y (mixtures towards random simplex points, shrunk to fit)."""
    z = torch.distributions.Dirichlet(torch.ones(len(y), dtype=torch.float64)).sample((n,))
    z = z[torch.randperm(n, generator=g)]
    dist = (z - y).abs().sum(-1, keepdim=True)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * torch.clamp(eps / dist, max=1.0)
    return y + scale * (z - y)


def check_feasible(released: torch.Tensor, probs: torch.Tensor, eps: float) -> None:
    assert released.shape == probs.shape and released.dtype == probs.dtype
    assert (released >= 0).all()
    torch.testing.assert_close(released.double().sum(-1), torch.ones(len(probs), dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert ((released.double() - probs.double()).abs().sum(-1) <= eps + 1e-6).all()


@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0, 2.0])
def test_redirect_solves_the_linear_program(eps):
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(40, 7, generator=g, dtype=torch.float64) * 3, -1)
    probs[0] = torch.nn.functional.one_hot(torch.tensor(2), 7).double()  # a one-hot row: nothing can be taken there
    scores = torch.randn(40, 7, generator=g, dtype=torch.float64)
    released = redirect(probs, scores, eps)
    check_feasible(released, probs, eps)
    gained = (released * scores).sum(-1)
    torch.manual_seed(0)
    for i in range(len(probs)):
        best = lp_optimum(probs[i].numpy(), scores[i].numpy(), eps)
        assert gained[i].item() == pytest.approx(best, abs=1e-7)
        others = (random_feasible(probs[i], eps, 200, g) * scores[i]).sum(-1)
        assert (gained[i] >= others - 1e-9).all()
        assert gained[i] >= (probs[i] * scores[i]).sum() - 1e-12


def test_epsilon_must_be_positive():
    for eps in (0.0, -0.1):
        with pytest.raises(ConfigError, match=r"defense\.epsilon must be > 0") as err:
            GradientRedirection(epsilon=eps)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="defense.target"):
        GradientRedirection(target="nowhere")
    with pytest.raises(ConfigError, match="proxy_epochs"):
        GradientRedirection(proxy_epochs=[3, 1])


def _built(**kwargs) -> tuple[GradientRedirection, torch.Tensor, torch.Tensor]:
    world = TinyWorld(seed=3)
    torch.manual_seed(0)
    defense = GradientRedirection(**kwargs)
    defense.setup(make_defense_setup(world))
    x = world.images(12, 99)
    with torch.no_grad():
        probs = torch.softmax(world.victim()(x), -1)
    return defense.eval(), x, probs


def _autograd_step(proxy: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> torch.Tensor:
    """u(y) = -grad CE(y, proxy(x)) over the named parameters, one sample, by plain autograd."""
    params = dict(proxy.named_parameters())
    chosen = [params[n].detach().clone().requires_grad_(True) for n in names]
    sub = dict(zip(names, chosen))
    logp = torch.log_softmax(torch.func.functional_call(proxy, sub, (x[None],), strict=False), -1)[0]
    grads = torch.autograd.grad((y.float() * logp).sum(), chosen)
    return torch.cat([gr.flatten() for gr in grads])


@pytest.mark.parametrize("params", ["all", "last"])
def test_min_ip_scores_match_per_sample_autograd(params):
    defense, x, probs = _built(epsilon=0.5, params=params, proxy_epochs=[1])
    proxy = defense.proxies[0]
    names = list(defense._chosen_params(proxy))
    scores = defense.scores(x, probs, 0)
    k = probs.shape[1]
    for i in range(len(x)):  # a test may loop: this is the independent, slow reference
        u = _autograd_step(proxy, x[i], probs[i], names)
        per_class = torch.stack([_autograd_step(proxy, x[i], torch.eye(k)[j], names) for j in range(k)])
        torch.testing.assert_close(scores[i], -(per_class @ u), rtol=1e-4, atol=1e-5)


def test_last_layer_scores_match_the_closed_form():
    """Last linear layer z = W h + b: <grad log p_k, grad log p_j> = (e_k - p).(e_j - p) (|h|^2 + 1), so the
    min-IP score is c_k = -(|h|^2 + 1) (e_k - p).(y - p)."""
    defense, x, probs = _built(epsilon=0.5, params="last", proxy_epochs=[1])
    proxy = defense.proxies[0]
    with torch.no_grad():
        h = proxy[:-1](x)
        p = torch.softmax(proxy(x), -1)
    expected = -((h * h).sum(-1, keepdim=True) + 1) * (probs - p - ((probs - p) * p).sum(-1, keepdim=True))
    torch.testing.assert_close(defense.scores(x, probs, 0), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", ["min_ip", "all_ones", "max_norm", "watermark"])
def test_released_answer_redirects_best_among_feasible_points(target):
    eps = 0.4
    defense, x, probs = _built(epsilon=eps, target=target, proxy_epochs=[0, 1])
    released = defense(x, probs)
    check_feasible(released, probs, eps)
    which = defense._hash.choose(x, len(defense.proxies))
    assert len(set(which.tolist())) == 2  # both proxies answer some of these queries
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    for i in range(len(x)):
        proxy = defense.proxies[int(which[i])]
        names = list(defense._chosen_params(proxy))
        if target == "min_ip":
            t = -_autograd_step(proxy, x[i], probs[i], names)
        else:
            t = torch.cat([defense._targets[int(which[i])][n].flatten() for n in names])

        def objective(y):  # <u(y'), t>, the redirection objective, by plain autograd
            return float(_autograd_step(proxy, x[i], y, names) @ t)

        got = objective(released[i])
        assert got >= objective(probs[i]) - 1e-5
        for y in random_feasible(probs[i].double(), eps, 20, g):
            assert got >= objective(y) - 1e-5
        # and it is the LP optimum of the linear objective (scores computed independently, by autograd)
        k = probs.shape[1]
        c = np.array([objective(torch.eye(k)[j]) for j in range(k)])
        assert got == pytest.approx(lp_optimum(probs[i].double().numpy(), c, eps), rel=1e-4, abs=1e-5)


def test_same_query_same_answer_whatever_the_batch():
    defense, x, probs = _built(epsilon=0.5, proxy_epochs=[0, 1, 2])
    whole = defense(x, probs)
    torch.testing.assert_close(defense(x[3:5], probs[3:5]), whole[3:5], atol=1e-6, rtol=0)
    torch.testing.assert_close(defense(x, probs), whole, atol=0, rtol=0)


@pytest.mark.parametrize("kwargs", [{}, {"target": "all_ones"}, {"target": "watermark", "params": "last"},
                                    {"target": "max_norm", "proxy_epochs": [0]}])
def test_conforms(kwargs):
    check_defense("grad2", kwargs=kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_conforms_on_gpu():
    check_defense("grad2", world=TinyWorld(device=torch.device("cuda")))
