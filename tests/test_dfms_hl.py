"""DFMS-HL (Sanyal et al. 2022): hard labels only, a proxy-trained GAN with the class-diversity loss. Fast: the
digits victim of tests/test_data_free.py, budgets of a few hundred to a few thousand queries."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stealbench.attacks.dfms_hl import DFMSHL, class_diversity_loss, mean_entropy
from stealbench.attacks.shapes import synthetic_shapes
from stealbench.errors import ConfigError

from test_data_free import context, run, victim  # noqa: F401  (the module-scoped victim fixture)


def small(**kw) -> DFMSHL:
    return DFMSHL(**{"batch_size": 32, "pretrain_steps": 10, "divgan_steps": 5, "warmup_epochs": 2, **kw})


def weights(net) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


# ------------------------------------------------------------------------------------------------ the loss
def test_class_diversity_loss_by_hand():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    mean = [0.3, 0.225, 0.475]
    expected = sum(m * math.log(m + 1e-5) for m in mean)  # 0.3 ln 0.3 + 0.225 ln 0.225 + 0.475 ln 0.475 = -1.0504
    assert class_diversity_loss(p.log()).item() == pytest.approx(expected, abs=1e-6)
    assert class_diversity_loss(p.log()).item() == pytest.approx(-1.05036, abs=1e-4)
    # a batch spread evenly over K classes is the minimum, -log K; a batch on one class is about 0
    assert class_diversity_loss(torch.eye(4) * 50).item() == pytest.approx(-math.log(4), abs=1e-3)
    assert class_diversity_loss(torch.tensor([[50.0, 0, 0, 0]] * 3)).item() == pytest.approx(0, abs=1e-3)
    assert mean_entropy(torch.zeros(2, 4)).item() == pytest.approx(math.log(4), abs=1e-4)


def test_synthetic_shapes_are_seeded_images():
    a = synthetic_shapes(16, (3, 8, 8), torch.Generator().manual_seed(0))
    b = synthetic_shapes(16, (3, 8, 8), torch.Generator().manual_seed(0))
    assert a.shape == (16, 3, 8, 8) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert a.flatten(1).std(1).min() > 0  # every image has a shape on it
    assert not torch.equal(a, synthetic_shapes(16, (3, 8, 8), torch.Generator().manual_seed(1)))


# ------------------------------------------------------------------------------------------ query accounting
@pytest.mark.parametrize("budget,proxy_queries", [(600, 100), (601, None), (333, 0)])
def test_every_query_is_counted_and_the_budget_is_spent_exactly(victim, budget, proxy_queries):  # noqa: F811
    attack = small(proxy_queries=proxy_queries)
    ctx, oracle, curve = context(victim, budget)
    run(attack, ctx)
    report = attack.report()
    assert oracle.used == sum(oracle.calls) == budget
    initial = budget // 10 if proxy_queries is None else proxy_queries
    assert sum(report[f"queries/{k}"] for k in ("proxy", "initial_generated", "divgan", "generated")) == budget
    assert report["queries/proxy"] + report["queries/initial_generated"] == initial  # the code's half and half
    assert report["queries/initial_generated"] == report["queries/divgan"] == round(initial / 2)
    assert report["steps/divgan"] == 5 and report["steps/retrain"] == (2 * math.ceil(initial / 32) if initial else 0)
    assert max(oracle.calls) <= max(32, initial)
    assert report["steps/alternating"] == report["iterations"] == math.ceil(report["queries/generated"] / 32)
    assert report["steps/pretrain"] == 10 and report["proxy/shapes"] == 1.0
    assert curve[-1][0] == budget and [c[0] for c in curve] == sorted(c[0] for c in curve)
    assert [c[1] for c in curve] == sorted({c[1] for c in curve})
    assert all(math.isfinite(v) for v in report.values())


# ------------------------------------------------------------------------------------------- hard labels only
def test_only_the_argmax_is_used(victim, monkeypatch):  # noqa: F811
    """The oracle answers soft probabilities; the clone's targets are class indices, and replacing every answer
    by its one-hot changes nothing: same curve, same final weights."""
    seen = []
    step = DFMSHL._student_step
    monkeypatch.setattr(DFMSHL, "_student_step",
                        lambda self, s, o, x, y: (seen.append(y), step(self, s, o, x, y))[1])
    ctx, oracle, soft_curve = context(victim, 500)
    answers = []
    real_query = type(oracle).query

    def soft_query(self, x):
        out = real_query(self, x)
        answers.append(out)
        return out

    monkeypatch.setattr(type(oracle), "query", soft_query)
    soft = run(small(), ctx)
    assert any((a.max(-1).values < 0.999).any() for a in answers)  # the answers really were soft
    assert seen and all(not y.is_floating_point() and y.dim() == 1 for y in seen)

    def one_hot_query(self, x):
        out = real_query(self, x)
        return torch.nn.functional.one_hot(out.argmax(-1), out.shape[-1]).float()

    monkeypatch.setattr(type(oracle), "query", one_hot_query)
    ctx2, _, hard_curve = context(victim, 500)
    hard = run(small(), ctx2)
    assert soft_curve == hard_curve
    assert torch.equal(weights(soft), weights(hard))


# ------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_curve(victim):  # noqa: F811
    curves, nets = [], []
    for seed in (0, 0, 1):
        ctx, _, curve = context(victim, 400, seed=seed)
        nets.append(weights(run(small(), ctx, seed=seed)))
        curves.append(curve)
    assert curves[0] == curves[1] and torch.equal(nets[0], nets[1])
    assert not torch.equal(nets[0], nets[2])


# ------------------------------------------------------------------------------------------- it steals
def test_the_clone_beats_chance(victim):  # noqa: F811
    """Digits (chance 0.1, victim about 0.95), 3000 queries, synthetic shapes as the proxy: about 0.45. A clone
    trained on wrong or shuffled labels, or never stepped, stays near 0.1; the bound 0.3 fails it."""
    ctx, oracle, curve = context(victim, 3000)
    attack = DFMSHL(batch_size=32, pretrain_steps=50)
    run(attack, ctx)
    assert oracle.used == 3000
    assert curve[-1][2] >= 0.3, curve


def test_a_foreign_pool_is_the_proxy(victim):  # noqa: F811
    """A labelled pool from another data set is the proxy (colour images converted to the grey victim's
    channels); the victim task's own pool (no pool labels) is not: `auto` falls back to shapes."""
    ctx, oracle, _ = context(victim, 400)
    ctx.pool_x = synthetic_shapes(200, (3, 16, 16), torch.Generator().manual_seed(3))
    ctx.pool_labels = torch.zeros(200, dtype=torch.long)
    attack = small()
    run(attack, ctx)
    assert attack.report()["proxy/shapes"] == 0.0 and oracle.used == 400
    assert attack.report()["queries/proxy"] == attack.report()["queries/initial_generated"] == 20
    ctx, _, _ = context(victim, 400)
    ctx.pool_x = victim["splits"].pool_x
    attack = small()
    run(attack, ctx)
    assert attack.report()["proxy/shapes"] == 1.0
    assert small(proxy="shapes").needs_pool is False and small().needs_pool is True


# ---------------------------------------------------------------------------------------------- bad input
def test_a_proxy_of_the_wrong_shape_is_one_config_error(victim):  # noqa: F811
    ctx, oracle, _ = context(victim, 400)
    ctx.pool_x = torch.rand(50, 2, 8, 8)  # two channels: neither grey nor RGB
    ctx.pool_labels = torch.zeros(50, dtype=torch.long)
    with pytest.raises(ConfigError, match="DFMS-HL proxy: cannot convert 2-channel") as err:
        run(small(), ctx)
    assert "\n" not in str(err.value) and oracle.used == 0
    ctx, _, _ = context(victim, 400)
    with pytest.raises(ConfigError, match="--pool_data"):
        run(small(proxy="pool"), ctx)


@pytest.mark.parametrize("kwargs,budget,need", [({"proxy_queries": 0}, 31, 32), ({}, 36, 37),
                                                ({"divgan_steps": 0}, 34, 35), ({"init_generated": 0.0}, 34, 35),
                                                ({"proxy_queries": 100, "batch_size": 64}, 213, 214)])
def test_a_budget_too_small_for_one_student_batch(kwargs, budget, need):
    attack = DFMSHL(**{"batch_size": 32, **kwargs})
    with pytest.raises(ConfigError, match=f"= {need} queries"):
        attack.validate(budget=budget, num_classes=10, pool_size=0)
    attack.validate(budget=need, num_classes=10, pool_size=0)


@pytest.mark.parametrize("kwargs,text", [
    ({"proxy": "cifar"}, "attack.proxy"), ({"batch_size": 0}, "attack.batch_size"),
    ({"diversity_weight": float("nan")}, "attack.diversity_weight"), ({"lr_generator": 0.0}, "attack.lr_generator"),
    ({"proxy_queries": -1}, "attack.proxy_queries"), ({"pretrain_steps": 1.5}, "attack.pretrain_steps"),
    ({"init_generated": 1.5}, "attack.init_generated"), ({"divgan_diversity_weight": -1}, "divgan_diversity_weight"),
])
def test_nonsense_options_are_one_config_error(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        DFMSHL(**kwargs)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("proxy", ["auto", "shapes"])
def test_fit_runs_dfms_hl(tmp_path, proxy):
    from stealbench.cli import main

    out = tmp_path / "runs"
    code = main(["fit", "--data", "digits", "--attack", "dfms-hl", "--attack.batch_size", "32",
                 "--attack.pretrain_steps", "5", "--attack.warmup_epochs", "1", "--attack.proxy", proxy,
                 "--attack.num_checkpoints", "3", "--budget", "500", "--victim.epochs", "3",
                 "--progress_bar", "false", "--output_dir", str(out), "--name", "e2e"])
    assert code == 0
    results = json.loads((out / "e2e" / "results.json").read_text())
    extra = results["extra_metrics"]
    assert results["metrics"]["queries"] == 500 == results["curve"][-1]["queries"]
    assert extra["attack/queries/proxy"] == extra["attack/queries/initial_generated"] == 25
    assert extra["attack/queries/divgan"] == 25 and extra["attack/queries/generated"] == 425
    assert extra["attack/proxy/shapes"] == 1.0
    assert results["pool"]["needed"] is (proxy == "auto")


def test_fit_refuses_a_budget_too_small(tmp_path, capsys):
    from stealbench.cli import main

    code = main(["fit", "--data", "digits", "--attack", "dfms-hl", "--budget", "50", "--output_dir",
                 str(tmp_path / "runs"), "--progress_bar", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "too small for DFMS-HL" in err, err
    assert not list(tmp_path.rglob("results.json"))
