"""ModelGuard-W (the batched LP) against independent oracles, and ModelGuard-S's sequential semantics and state.

Speed of the batched LP (bench/modelguard_lp_speed.py, one run on the 2-core development machine, shared): 512 rows
x 10 classes, epsilon 1: one linprog per row 2.54 s, stacked block-diagonal LPs of 128 rows 0.110 s (23x); 1024 rows
x 100 classes: 5.8 s vs 1.8 s (3.2x), answers equal to 1.6e-15.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from stealbench.defenses.modelguard import ModelGuardS, ModelGuardW, cover_kmeans, modelguard_w_solve
from stealbench.errors import ConfigError
from stealbench.testing import check_defense
from stealbench.testing.world import TinyWorld, make_defense_setup

OFFSET = 1e-6


def objective(y: np.ndarray, released: np.ndarray) -> np.ndarray:
    return (np.log(y + OFFSET) * released).sum(-1)


def dense_oracle(y: np.ndarray, epsilon: float, margin: float = 1e-4, tie_break: float = 0.0) -> np.ndarray:
    """One row, another formulation: variables [y' (K), t (K)], t >= |y' - y|, dense matrices."""
    k = len(y)
    top = int(np.argmax(y))
    c = np.concatenate([np.log(y + OFFSET) + tie_break * np.arange(k), np.zeros(k)])
    eye = np.eye(k)
    a_ub = [np.hstack([eye, -eye]), np.hstack([-eye, -eye]), np.concatenate([np.zeros(k), np.ones(k)])[None]]
    b_ub = [y, -y, [epsilon]]
    for j in range(k):
        if j != top:
            row = np.zeros(2 * k)
            row[j], row[top] = 1.0, -1.0
            a_ub.append(row[None])
            b_ub.append([-margin])
    res = linprog(c, A_ub=np.vstack(a_ub), b_ub=np.concatenate(b_ub),
                  A_eq=np.concatenate([np.ones(k), np.zeros(k)])[None], b_eq=[1.0],
                  bounds=[(0, 1)] * k + [(0, None)] * k, method="highs")
    assert res.status == 0, res.message
    return res.x[:k]


def rows(n: int, k: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    temps = torch.linspace(0.5, 8.0, n)[:, None]
    return torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * temps, -1).numpy()


@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 1.8])
def test_the_batched_lp_reaches_the_per_row_optimum(epsilon):
    y = rows(40, 10, seed=int(epsilon * 10))
    top = y.argmax(1)
    batched = modelguard_w_solve(y, top, epsilon, tie_break=0.0)
    oracle = np.stack([dense_oracle(row, epsilon) for row in y])
    # the optimum value is unique (the vertex need not be)
    np.testing.assert_allclose(objective(y, batched), objective(y, oracle), atol=1e-7, rtol=1e-7)
    # with the tie-break the optimum is unique: the same answer, row by row
    unique = modelguard_w_solve(y, top, epsilon)
    oracle_tb = np.stack([dense_oracle(row, epsilon, tie_break=1e-6) for row in y])
    np.testing.assert_allclose(unique, oracle_tb, atol=1e-6)


def test_the_lp_against_a_closed_form_and_a_brute_force_search():
    # moving eps/2 from the top to the least likely class is the cheapest way down, and nothing binds
    out = modelguard_w_solve(np.array([[0.7, 0.2, 0.1]]), np.array([0]), 0.2)
    np.testing.assert_allclose(out, [[0.6, 0.2, 0.2]], atol=1e-8)
    # K = 3: every grid point of the simplex that meets the constraints is no better than the LP
    step = 0.002
    a, b = np.meshgrid(np.arange(0, 1 + step / 2, step), np.arange(0, 1 + step / 2, step), indexing="ij")
    grid = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], 1)
    grid = grid[grid[:, 2] >= -1e-12]
    for y, epsilon in [(np.array([0.5, 0.3, 0.2]), 0.6), (np.array([0.8, 0.15, 0.05]), 1.5),
                       (np.array([0.34, 0.33, 0.33]), 0.3)]:
        lp = modelguard_w_solve(y[None], np.array([0]), epsilon, tie_break=0.0)[0]
        ok = ((np.abs(grid - y).sum(1) <= epsilon) & (grid[:, 0] >= grid[:, 1] + 1e-4)
              & (grid[:, 0] >= grid[:, 2] + 1e-4))
        best = objective(y, grid[ok]).min()
        assert objective(y, lp) <= best + 1e-9
        assert best - objective(y, lp) < 0.05  # the grid comes close to the LP's optimum


def test_released_answers_meet_every_constraint_and_misinform():
    y = rows(64, 10, seed=3)
    defense = ModelGuardW(epsilon=0.7)
    released = defense(None, torch.tensor(y, dtype=torch.float32)).double().numpy()
    assert (released >= 0).all() and np.allclose(released.sum(1), 1, atol=1e-6)
    assert (np.abs(released - y).sum(1) <= 0.7 + 1e-5).all()
    top = y.argmax(1)
    others = np.where(np.eye(10, dtype=bool)[top], -np.inf, released)
    assert (released[np.arange(64), top] >= others.max(1) + 1e-4 - 1e-6).all()  # top-1 kept by the margin
    assert (objective(y, released) < objective(y, y) - 1e-3).all()  # strictly more misinformation than y itself


def test_ties_and_zeros_in_y():
    defense = ModelGuardW(epsilon=0.5)
    probs = torch.tensor([[0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]],
                         dtype=torch.float64)
    out = defense(None, probs)
    # a tie resolves to the first index (torch.argmax), which becomes the strict top-1
    assert out[0, 0] >= out[0, 1] + 1e-4 and out[3, 0] >= out[3, 1:].max() + 1e-4
    assert torch.isfinite(out).all() and (out.argmax(1) == torch.tensor([0, 0, 2, 0])).all()
    assert ((out - probs).abs().sum(1) <= 0.5 + 1e-6).all()
    # the tie-break sends mass to the lowest-index class among equals: one answer whatever the batch
    assert torch.allclose(out[1:2], defense(None, probs[1:2]), atol=1e-9)
    assert out[1, 1] > out[1, 2]


@pytest.mark.parametrize("cls", [ModelGuardW, ModelGuardS])
@pytest.mark.parametrize("epsilon", [0.0, -0.5])
def test_a_non_positive_epsilon_is_refused_in_one_line(cls, epsilon):
    with pytest.raises(ConfigError, match=r"defense\.epsilon must be > 0") as info:
        cls(epsilon=epsilon)
    assert "\n" not in str(info.value)


def test_an_epsilon_below_twice_the_margin_is_refused():
    with pytest.raises(ConfigError, match="2 \\* defense.margin"):
        ModelGuardW(epsilon=1e-5)


# ---------------------------------------------------------------------------------------------- ModelGuard-S
def seeded(**kw) -> ModelGuardS:
    defense = ModelGuardS(**kw)
    defense.setup(make_defense_setup(TinyWorld(seed=0)))
    return defense


def queries(n: int, seed: int, k: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g) * 3, -1)


def test_seeding_covers_every_training_output_within_epsilon():
    g = torch.Generator().manual_seed(1)
    data = torch.softmax(torch.randn(300, 5, generator=g, dtype=torch.float64) * 4, -1)
    for epsilon in (0.3, 1.0):
        cents = cover_kmeans(data, epsilon)
        assert torch.cdist(data, cents, p=1).min(1).values.max() <= epsilon
        assert len(cents) > 1
    assert len(cover_kmeans(data, 0.3)) > len(cover_kmeans(data, 1.0))  # a tighter radius needs more centroids
    defense = seeded(epsilon=0.5)
    assert defense.state_size() > 0 and defense.report()["new_centroids"] == 0
    assert seeded(epsilon=0.5, init_centroids=2).state_size() <= 2 * 10
    assert seeded(epsilon=0.5, init="empty").state_size() == 0


def test_a_batch_is_answered_as_the_same_queries_one_by_one():
    q = torch.cat([queries(30, 1), queries(30, 1) * 0.98 + 0.002])  # repeats close to earlier queries
    whole, single = seeded(epsilon=0.3, init="empty"), seeded(epsilon=0.3, init="empty")
    a = whole(None, q)
    b = torch.cat([single(None, q[i:i + 1]) for i in range(len(q))])
    assert torch.equal(a, b)
    assert torch.equal(whole._bank, single._bank) and torch.equal(whole._cls, single._cls)
    # the repeats reuse the centroids their originals created: the state grows by the first 30 only
    assert whole.state_size() <= 30 and torch.equal(a[30:], a[:30])


def test_answers_are_centroids_within_epsilon_and_the_state_grows_only_for_new_answers():
    defense = seeded(epsilon=0.4)
    start = defense.state_size()
    q = queries(50, 2)
    out = defense(None, q)
    grown = defense.state_size()
    assert grown >= start and defense.report()["new_centroids"] == grown - start
    assert ((out - q).abs().sum(1) <= 0.4 + 1e-6).all()
    released_as_is = (out == q).all(1)  # a new centroid is released unchanged
    assert released_as_is.sum() >= grown - start
    again = defense(None, q)
    assert defense.state_size() == grown  # nothing new: the same queries find their centroids
    assert torch.equal(again, out)
    far = torch.eye(10)  # one-hot answers, farther than 0.4 from the peaked centroids made so far
    defense(None, far)
    assert defense.state_size() > grown


def test_deterministic_and_reset_restores_the_seeded_state():
    a, b = seeded(epsilon=0.5), seeded(epsilon=0.5)
    q = queries(40, 3)
    assert torch.equal(a(None, q), b(None, q))
    seeded_size = seeded(epsilon=0.5).state_size()
    first = a(None, queries(40, 4))
    a.reset()
    assert a.state_size() == seeded_size
    fresh = seeded(epsilon=0.5)
    fresh(None, q)
    assert torch.equal(fresh(None, queries(40, 4)), b(None, queries(40, 4)))
    a(None, q)
    assert torch.equal(a(None, queries(40, 4)), first)


def test_frozen_never_grows_and_falls_back_to_the_nearest_centroid():
    defense = seeded(epsilon=0.2, frozen=True)
    size = defense.state_size()
    q = queries(40, 5)
    out = defense(None, q)
    assert defense.state_size() == size
    assert torch.isfinite(out).all() and torch.allclose(out.sum(1), torch.ones(40))
    bank, cls = defense._bank.float(), defense._cls
    for i in range(len(q)):  # the reference, one query at a time
        mine = bank[cls == q[i].argmax()]
        d = (mine - q[i]).abs().sum(1)
        expected = q[i] if not len(mine) else mine[(d <= 0.2).nonzero()[0, 0]] if (d <= 0.2).any() else mine[d.argmin()]
        assert torch.allclose(out[i], expected, atol=1e-6)
    assert (out != q).any(1).sum() > 0  # some answers were quantised


@pytest.mark.parametrize("key,kwargs", [("modelguard-w", {}), ("modelguard-w", {"epsilon": 0.1, "chunk": 7}),
                                        ("modelguard-s", {}), ("modelguard-s", {"init_centroids": 2}),
                                        ("modelguard-s", {"init": "empty", "epsilon": 0.2}),
                                        ("modelguard-s", {"frozen": True, "seed_groups": "predicted"})])
def test_the_conformance_kit_passes(key, kwargs):
    check_defense(key, kwargs=kwargs)
