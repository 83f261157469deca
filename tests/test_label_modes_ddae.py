"""D-DAE (`ddae`): shadow victims on the attacker's own labelled data, a defense detector and a restorer.

The mode runs as in the attacker's process: `prepare(kit)` with attacker-owned resources only (digits pool
images, the labelled seed set, a model factory and a trainer), then queries through the real Oracle, which
scores the restored answers against the clean ones on the defender's side (`label_mode/recovery_l1`).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealbench.attacker.label_modes import LabelOptions, make_label_mode
from stealbench.attacker.label_modes.kit import AttackerKit, SeedSetCache
from stealbench.attacks.base import class_balanced_indices
from stealbench.data.digits import Digits
from stealbench.defender.oracle import Oracle
from stealbench.defenses.deceptive import DeceptivePerturbation
from stealbench.defenses.none import NoDefense
from stealbench.errors import ConfigError

#: small shadow training: seconds on digits
QUICK = dict(shadow_models=2, shadow_epochs=40, shadow_queries=300, answer_repeats=4, net_epochs=25)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(net: nn.Module, x, targets, epochs: int) -> nn.Module:
    """Plain soft-label cross-entropy with Adam (the attacker's trainer, deterministic)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(len(x))
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = -(targets[idx] * torch.log_softmax(net(x[idx]), -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    splits = Digits().splits()
    victim = train(mlp(100), splits.victim_x, nn.functional.one_hot(splits.victim_y, 10).float(), 30)
    for p in victim.parameters():
        p.requires_grad_(False)
    return splits, victim


def kit_for(splits, seed: int = 0) -> AttackerKit:
    """What a real attacker holds: its pool images and the seed set's labels, never the victim or eval set."""
    counter = iter(range(1000, 2000))

    def seed_set(per_class):
        idx = class_balanced_indices(splits.pool_y, per_class, 10, torch.Generator().manual_seed(7))
        return splits.pool_x[idx], splits.pool_y[idx]

    return AttackerKit(pool_x=splits.pool_x, num_classes=10, input_shape=(1, 8, 8), device=torch.device("cpu"),
                       new_model=lambda: mlp(next(counter)), train=train,
                       generator=torch.Generator().manual_seed(seed), seed_set=SeedSetCache(seed_set),
                       log=lambda message: None)


def run_mode(splits, victim, defense, options=None):
    oracle = Oracle(victim, defense, budget=400, input_shape=(1, 8, 8), num_classes=10)
    mode = make_label_mode("ddae", 10, LabelOptions(**{**QUICK, **(options or {})}))
    mode.prepare(kit_for(splits))
    wrapped = mode.wrap_oracle(oracle, torch.Generator().manual_seed(1))
    queries = splits.pool_x[torch.randperm(len(splits.pool_x), generator=torch.Generator().manual_seed(3))[:400]]
    released = torch.cat([wrapped.query(xb) for xb in queries.split(100)])
    return mode, oracle, released


def test_ddae_restores_reverse_sigmoid_answers_and_detects_it(digits, one_thread):
    splits, victim = digits
    mode, oracle, released = run_mode(splits, victim, DeceptivePerturbation(beta=1.0, gamma=0.2))
    report = mode.report()
    assert mode.verdict == "deceptive" and report["label_mode/detected"] == 1.0
    assert report["label_mode/detected_confidence"] > report["label_mode/detected_as/none"]
    # defender side: the restored answers are closer to the clean ones than the released ones
    raw_l1 = oracle.stats()["oracle/l1"]
    recovery = oracle.recovery()
    assert recovery["label_mode/recovery_rows"] > 0
    assert recovery["label_mode/recovery_l1"] < 0.7 * raw_l1, (recovery, raw_l1)
    # what the attack trains on is the restored answer, and the shadow compute is in the report
    torch.testing.assert_close(mode(released), mode.recover(released.float()))
    assert report["label_mode/shadow_seconds"] > 0 and report["label_mode/shadow_models"] == 2
    assert report["label_mode/shadow_train_images"] == 100  # the seed set: 10 per class, no oracle query
    assert oracle.used == 400


def test_ddae_detects_no_defense_and_leaves_the_answers_alone(digits, one_thread):
    splits, victim = digits
    mode, oracle, released = run_mode(splits, victim, NoDefense(), {"candidates": ["deceptive"]})
    assert mode.verdict == "none" and mode.report()["label_mode/detected"] == 0.0
    assert torch.equal(mode(released), released)
    assert oracle.recovery()["label_mode/recovery_l1"] < 1e-5


def test_ddae_uses_the_attackers_own_labelled_pool_when_it_has_one(digits, one_thread):
    splits, _ = digits
    kit = kit_for(splits)
    kit.pool_labels = splits.pool_y  # as with --pool_data: the pool data set's own labels, the attacker's
    kit.seed_set = None
    mode = make_label_mode("ddae", 10, LabelOptions(**QUICK, candidates=["deceptive"], shadow_train_size=200))
    mode.prepare(kit)
    mode.observe(torch.softmax(torch.randn(8, 10) * 5, -1))
    report = mode.report()
    assert report["label_mode/shadow_labels_from_pool_data"] == 1.0
    assert report["label_mode/shadow_train_images"] == 200


@pytest.mark.parametrize("options,match", [
    ({"candidates": ["nonsense"]}, "candidates: 'nonsense' is not a registered defense"),
    ({"candidates": []}, "candidates must be a non-empty list"),
    ({"candidates": ["none"]}, "not `none`"),
    ({"ranges": {"topk": {"k": [1, 2]}}, "candidates": ["deceptive"]}, "ranges names 'topk'"),
    ({"ranges": {"deceptive": {"alpha": [0, 1]}}}, "ranges.deceptive must map parameters"),
    ({"ranges": {"deceptive": {"beta": [2, 1]}}}, "ranges.deceptive.beta must be a number or \\[low, high\\]"),
    ({"shadow_models": 0}, "label_options.shadow_models must be an integer >= 1"),
    ({"logit_scale": [2, 1]}, "logit_scale must be \\[low, high\\]"),
    ({"shadow_data": "victim"}, "shadow_data must be one of auto, pool_labels, seed_set"),
    ({"bogus": 1}, "label_options.bogus do not apply"),
])
def test_ddae_bad_options_are_one_line_errors(options, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_label_mode("ddae", 10, LabelOptions(options))
    assert "\n" not in str(info.value)


def test_ddae_refuses_missing_data_sources_and_out_of_range_parameters(digits):
    splits, _ = digits
    kit = kit_for(splits)
    with pytest.raises(ConfigError, match="shadow_data pool_labels needs a pool from another data set"):
        make_label_mode("ddae", 10, LabelOptions(shadow_data="pool_labels")).prepare(kit)
    with pytest.raises(ConfigError, match="runs inside an attack"):
        make_label_mode("ddae", 10, LabelOptions(QUICK)).observe(torch.full((2, 10), 0.1))
    mode = make_label_mode("ddae", 10, LabelOptions(**QUICK, candidates=["deceptive"],
                                                     ranges={"deceptive": {"beta": [-1.0, -0.5]}}))
    mode.prepare(kit)
    with pytest.raises(ConfigError, match="ranges.deceptive: defense.beta must be > 0"):
        mode.observe(torch.full((2, 10), 0.1))
