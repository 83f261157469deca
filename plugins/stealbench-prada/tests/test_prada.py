"""Tests of the PRADA plugin: the detector's stream, its answers after the alarm, conformance and registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stealbench.testing import check_defense
from stealbench_prada import PRADA, shapiro_w


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


def answers(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, 10).float() * 0.9 + 0.01


def jbda_like_stream(x, y, rounds=3, lam=0.1):
    """Seed set, then rounds of small signed steps away from the whole set (the set doubles)."""
    g = torch.Generator().manual_seed(1)
    xs, ys = [x[:100]], [y[:100]]
    cur_x, cur_y = x[:100], y[:100]
    for _ in range(rounds):
        new = (cur_x + lam * torch.sign(torch.randn(cur_x.shape, generator=g))).clamp(0, 1)
        xs.append(new)
        ys.append(cur_y)
        cur_x, cur_y = torch.cat([cur_x, new]), torch.cat([cur_y, cur_y])
    return xs, ys


def test_natural_queries_raise_no_alarm(digits):
    # With the authors' D_Gc = {0, ...} rule the growing sets are large early on and W of the natural digits stream
    # dips to 0.947 around query 200 (few distances, a mixture of ten classes), so the default min_distances=100
    # false-alarms at query 111 here; from 300 distances on W stays >= 0.957 (measured over 1,500 queries).
    x, y = digits
    prada = PRADA(min_distances=300)
    released = prada(x[:1500], answers(y[:1500]))
    assert prada.report()["alarm"] == 0.0 and prada.alarm_query is None
    assert torch.equal(released, answers(y[:1500]))


def test_synthetic_stream_is_flagged_and_answers_change(digits):
    x, y = digits
    prada = PRADA(response="uniform")
    outs = [prada(bx, answers(by)) for bx, by in zip(*jbda_like_stream(*digits))]
    report = prada.report()
    assert report["alarm"] == 1.0
    q = int(report["alarm_query"])
    assert 100 < q < 800 and report["queries_seen"] == 800
    released = torch.cat(outs)
    assert torch.allclose(released[q - 1:], torch.full_like(released[q - 1:], 0.1))  # from the alarming query on
    assert not torch.allclose(released[: q - 1], torch.full_like(released[: q - 1], 0.1))


def test_batching_does_not_change_the_decisions(digits):
    """The stream is processed in query order whatever the batch boundaries."""
    xs, ys = jbda_like_stream(*digits)
    x, y = torch.cat(xs), torch.cat(ys)
    whole, pieces = PRADA(response="none"), PRADA(response="none")
    whole(x, answers(y))
    for bx, by in zip(x.split(37), y.split(37)):
        pieces(bx, answers(by))
    assert whole.report() == pieces.report()


def test_random_response_releases_one_hot_labels_and_reset_forgets(digits):
    prada = PRADA(response="random", min_distances=50)
    xs, ys = jbda_like_stream(*digits)
    outs = torch.cat([prada(bx, answers(by)) for bx, by in zip(xs, ys)])
    q = prada.alarm_query
    assert q is not None
    assert torch.equal(outs[q:].max(-1).values, torch.ones(len(outs) - q))
    prada.reset()
    assert prada.alarm_query is None and prada.report()["queries_seen"] == 0


def test_sequential_reference_on_a_small_stream():
    """The batched implementation admits exactly what a naive query-by-query reference admits."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 1, 4, 4, generator=g)
    classes = torch.randint(3, (60,), generator=g)
    prada = PRADA(min_distances=1000)
    prada.observe(x, classes)
    # the authors' rule: a class's first query starts its growing set, its admitted-distance list with 0, T_c = 0
    members, thresholds, sets, dists = {}, {}, {}, []
    for xi, c in zip(x.flatten(1).double(), classes.tolist()):
        if c not in members:
            members[c], sets[c], thresholds[c] = [xi], [0.0], 0.0
            continue
        d = min(float((xi - m).norm()) for m in members[c])
        dists.append(d)
        if d > thresholds[c]:
            members[c].append(xi)
            sets[c].append(d)
            thresholds[c] = max(thresholds[c], float(np.mean(sets[c]) - np.std(sets[c])))
    assert np.allclose(prada._distances[: prada._n_distances], dists)
    assert len(prada._members) == sum(len(m) for m in members.values())
    assert prada._threshold == pytest.approx(thresholds)


def test_the_admitted_distances_start_with_the_authors_zero():
    # one class on a line: 0, then 1 (d = 1, admitted), then 1.5 (d = 0.5 to the point at 1).
    # D_Gc = {0, 1} gives T = max(0, 0.5 - 0.5) = 0, so 1.5 is admitted too and D_Gc = {0, 1, 0.5}:
    # T = 0.5 - std{0, 1, 0.5} = 0.5 - sqrt(1/6). Without the 0, T would jump to 1 and reject 1.5.
    x = torch.tensor([0.0, 1.0, 1.5]).view(3, 1, 1, 1)
    prada = PRADA(min_distances=1000)
    prada.observe(x, torch.zeros(3, dtype=torch.long))
    assert prada.report()["growing_set"] == 3
    assert prada.state_size() == 3  # the price's defense/state_size: stored queries
    assert prada._threshold[0] == pytest.approx(0.5 - np.sqrt(1 / 6))
    assert list(prada._distances[: prada._n_distances]) == [1.0, 0.5]  # the seeding 0 is not a query distance
    prada.reset()
    assert prada.state_size() == 0


def test_shapiro_w_is_high_for_normal_data():
    rng = np.random.default_rng(0)
    assert shapiro_w(rng.normal(size=500)) > 0.99
    assert shapiro_w(rng.exponential(size=500)) < 0.95
    assert shapiro_w(np.ones(10)) == 1.0


def test_bad_options_fail_clearly():
    from stealbench.errors import ConfigError

    with pytest.raises(ConfigError, match="delta"):
        PRADA(delta=1.5)
    with pytest.raises(ConfigError, match="response"):
        PRADA(response="shuffle")


def test_conformance():
    check_defense("prada")


def test_registered_through_the_entry_point():
    from stealbench.plugins import get_catalog

    catalog = get_catalog()
    assert catalog.defenses.get("prada") is PRADA
    (info,) = [p for p in catalog.plugins if p.name == "prada"]
    assert info.distribution == "stealbench-prada" and info.registered == {"defenses": ["prada"]}
