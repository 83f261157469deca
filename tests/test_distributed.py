"""Many devices, one experiment: DDP training phases in spawned workers, distinct shards per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from stealbench import distributed
from stealbench.errors import ConfigError
from stealbench.training import TrainSettings, fit

CPU2 = {"accelerator": "cpu", "devices": 2}


class RecordingNet(nn.Module):
    """A linear classifier on features 1.. of each row; feature 0 is the sample's id, written to a file per rank
    for every training batch (module level: the workers unpickle it)."""

    def __init__(self, record_dir: str, features: int) -> None:
        super().__init__()
        self.record_dir = record_dir
        self.linear = nn.Linear(features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            rank, world = distributed.rank_and_world()
            with open(os.path.join(self.record_dir, f"rank{rank}_of{world}.txt"), "a") as f:
                f.write(" ".join(str(int(i)) for i in x[:, 0].tolist()) + "\n")
        return self.linear(x[:, 1:])


def _separable(n: int, features: int = 4):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    feats = torch.randn(n, features, generator=g) + (2.0 * y - 1.0)[:, None] * 2.0
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], feats], dim=1)
    return x, torch.nn.functional.one_hot(y, 2).float(), y


def test_shards_are_equal_sized_and_cover_the_epoch(monkeypatch):
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    for world in (1, 2, 3, 4):
        parts = []
        for rank in range(world):
            monkeypatch.setattr(distributed, "rank_and_world", lambda r=rank, w=world: (r, w))
            part = distributed.shard(perm)
            assert len(part) == distributed.shard_size(10) == -(-10 // world)
            parts.append(part)
        joined = torch.cat(parts)
        assert set(joined.tolist()) == set(range(10))  # covering
        assert len(joined) - len(set(joined.tolist())) == len(joined) - 10  # only the padding repeats


def test_plan_maps_ddp_to_spawned_workers_and_refuses_what_cannot_work():
    from lightning.pytorch.strategies import DDPStrategy

    for options in ({**CPU2, "strategy": "ddp"}, {**CPU2, "strategy": "ddp_find_unused_parameters_true"},
                    {**CPU2, "strategy": "ddp_fork"}, CPU2):  # auto with 2 devices: Lightning would pick ddp
        kwargs, parallel = distributed.plan(options, seed=0)
        assert parallel is not None and parallel.world_size == 2, options
        assert isinstance(kwargs["strategy"], DDPStrategy)
        assert kwargs["strategy"]._start_method == distributed.start_method() == "forkserver"  # no CUDA here
    kwargs, _ = distributed.plan({**CPU2, "strategy": "ddp_find_unused_parameters_true"}, seed=0)
    assert kwargs["strategy"]._ddp_kwargs.get("find_unused_parameters") is True
    # DDP on one device: trains here, no process group
    for options in ({"accelerator": "cpu", "devices": 1, "strategy": "ddp"}, {"accelerator": "cpu"}, {}):
        kwargs, parallel = distributed.plan(options, seed=0)
        assert parallel is None and kwargs.get("strategy", "auto") == "auto", options
    for bad in ({**CPU2, "strategy": "fsdp"}, {**CPU2, "strategy": "deepspeed_stage_2"}, {**CPU2, "num_nodes": 2},
                {**CPU2, "strategy": {"class_path": "lightning.pytorch.strategies.FSDPStrategy"}},
                {**CPU2, "strategy": DDPStrategy()}):
        with pytest.raises(ConfigError):
            distributed.plan(bad, seed=0)


def test_ddp_fit_trains_distinct_shards_per_rank_and_returns_the_weights(tmp_path, one_thread):
    n, epochs, batch = 48, 3, 8
    x, targets, y = _separable(n)
    torch.manual_seed(0)
    net = RecordingNet(str(tmp_path), features=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    settings = TrainSettings(batch_size=batch, lr=0.05, trainer={**CPU2, "strategy": "ddp"})
    trained = fit(net, x, targets, epochs, settings, seed=3, log_name="victim")

    files = sorted(p.name for p in tmp_path.glob("rank*.txt"))
    assert files == ["rank0_of2.txt", "rank1_of2.txt"]  # two ranks trained, in a process group of two
    seen = {}
    for rank in (0, 1):
        rows = [[int(v) for v in line.split()] for line in (tmp_path / f"rank{rank}_of2.txt").read_text().splitlines()]
        assert len(rows) == epochs * (n // 2 // batch)  # equal batch counts: no rank waits for the other
        flat = [i for row in rows for i in row]
        seen[rank] = [flat[e * n // 2:(e + 1) * n // 2] for e in range(epochs)]  # per epoch
    for epoch in range(epochs):
        a, b = set(seen[0][epoch]), set(seen[1][epoch])
        assert len(a) == len(b) == n // 2
        assert not a & b, f"epoch {epoch}: ranks trained on the same samples"
        assert a | b == set(range(n)), f"epoch {epoch}: the shards do not cover the data"
    assert seen[0][0] != seen[0][1]  # reshuffled each epoch

    # rank 0's trained weights came back into this process (which never trained) and the tensors are back in place
    after = trained.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        acc = (trained(x).argmax(-1) == y).float().mean().item()
    assert acc > 0.9
    assert "MASTER_PORT" not in os.environ


def test_ddp_loss_that_cannot_be_pickled_is_a_clear_error(tmp_path, one_thread):
    x, targets, _ = _separable(16)
    settings = TrainSettings(batch_size=8, trainer={**CPU2, "strategy": "ddp"})
    with pytest.raises(ConfigError, match="cannot run in DDP worker processes"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)), x, targets, 1, settings, seed=0, log_name="defense",
            loss=lambda logits, t: -(t * logits.log_softmax(-1)).sum(-1).mean())


@pytest.mark.slow
def test_cli_ddp_runs_one_experiment(tmp_path):
    """`stealbench fit --trainer.devices 2 --trainer.strategy ddp`: one run folder with one results.json."""
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "stealbench.cli", "fit", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--attack", "random", "--attack.num_checkpoints", "2", "--attack.epochs", "2",
         "--victim.epochs", "2", "--budget", "200", "--output_dir", str(out), "--wandb.mode", "disabled",
         "--progress_bar", "false"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["status"] == "complete" and results["metrics"]["queries"] == 200
    assert proc.stdout.count("victim trained") == 1


def test_cli_refuses_fsdp_before_training(tmp_path):
    from stealbench.cli import main

    code = main(["fit", "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "fsdp",
                 "--output_dir", str(tmp_path), "--wandb.mode", "disabled", "--progress_bar", "false"])
    assert code == 2
    assert not list(tmp_path.iterdir())  # no run folder: refused before the run started
