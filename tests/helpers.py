"""A small attack context for unit tests of attacks: a real oracle and the real Lightning trainer, in-process."""

from __future__ import annotations

import torch
from torch import nn

from stealbench.attacks.base import AttackContext, class_balanced_indices
from stealbench.defender.oracle import Oracle
from stealbench.defenses.none import NoDefense
from stealbench.training import TrainSettings, fit

SHAPE = (1, 8, 8)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def attack_context(budget, pool=400, defense=None, pool_labels=None, classes=10):
    """(ctx, log): log["trained"] lists the transfer-set size of each training call, log["points"] the query count
    and round of each checkpoint. Training asserts that it sees every queried image, and only those."""
    g = torch.Generator().manual_seed(0)
    oracle = Oracle(tiny_net(1), defense or NoDefense(), budget=budget, input_shape=SHAPE, num_classes=10)
    truth = torch.arange(classes).repeat(pool // classes + 1)[:pool]  # the framework's secret, for the seed set
    pool_x = torch.rand(pool, *SHAPE, generator=g)
    log = {"trained": [], "points": [], "rounds": []}
    settings = TrainSettings(batch_size=64, trainer={"accelerator": "cpu"})

    def train(model, x, targets, epochs):
        assert len(x) == len(targets) == oracle.used  # every queried image, and only those
        log["trained"].append(len(x))
        return fit(model, x, targets, 1, settings, seed=len(log["trained"]))

    def checkpoint(model, round_idx, fresh):
        log["points"].append(oracle.used)
        log["rounds"].append(round_idx)

    def seed_set(per_class):
        idx = class_balanced_indices(truth, per_class, classes, torch.Generator().manual_seed(1))
        return pool_x[idx], truth[idx]

    ctx = AttackContext(
        oracle=oracle, pool_x=pool_x, num_classes=10, input_shape=SHAPE, generator=g, device=torch.device("cpu"),
        new_surrogate=tiny_net, train=train, to_targets=lambda p: p, checkpoint=checkpoint, seed_set=seed_set,
        pool_labels=pool_labels, log=lambda msg: None)
    return ctx, log


#: the start of a recording plugin's module: `record(step)` writes steps.<step>.<pid> next to the report prefix
RECORD_PRELUDE = '''
import os

REPORT = {report!r}


def record(step):
    with open(f"{REPORT}.{step}.{os.getpid()}", "w") as fh:
        fh.write(str(os.getpid()))


record("import")
'''


def install_recorder(tmp_path, stealbench_distribution, distribution: str, module: str, source: str):
    """Install `source` (a plugin module whose steps write steps.<step>.<pid> files) as an attacker-side plugin
    distribution; returns the report prefix it was given."""
    report = tmp_path / "steps"
    stealbench_distribution(distribution, {module: source.replace("{report!r}", repr(str(report)))},
                            attack_entry_points={module.removeprefix("sb_"): module})
    return report


def recorded_steps(tmp_path) -> dict:
    """{step: {process ids}} from the steps.<step>.<pid> files a recording plugin wrote."""
    found: dict = {}
    for path in tmp_path.glob("steps.*.*"):
        _, step, pid = path.name.split(".")
        found.setdefault(step, set()).add(int(pid))
    return found
