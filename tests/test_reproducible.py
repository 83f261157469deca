"""The same command and seed give identical numbers on one machine, and results.json says what they depend on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from stealbench.reproducibility import THREAD_ENV, process_record, run_record

#: a digits run of a few seconds that trains its own victim (no cache) and runs both processes' training
TINY = ["--defense", "deceptive", "--attack", "jbda", "--victim.epochs", "2", "--victim.cache", "false",
        "--attack.rounds", "2", "--attack.epochs_per_round", "2", "--budget", "200", "--seed", "3",
        "--progress_bar", "false", "--wandb.mode", "disabled"]


def _fit(out: Path, name: str, hash_seed: str) -> dict:
    # another PYTHONHASHSEED per run: numbers that followed the iteration order of a set of strings would differ
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([sys.executable, "-m", "stealbench", "fit", *TINY, "--output_dir", str(out), "--name", name],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return json.loads((out / name / "results.json").read_text())


def test_same_command_and_seed_give_identical_metrics_and_curve(tmp_path):
    first, second = _fit(tmp_path, "a", "1"), _fit(tmp_path, "b", "2")
    assert first["victim"]["origin"] == second["victim"]["origin"] == "trained"
    # exact: a difference in the last bit is a nondeterminism
    assert first["metrics"] == second["metrics"]
    assert first["extra_metrics"] == second["extra_metrics"]
    assert first["curve"] == second["curve"] and len(first["curve"]) == 2
    assert first["seed_set"] == second["seed_set"]
    assert first["reproducibility"] == second["reproducibility"]
    record = first["reproducibility"]
    for side in ("defender", "attacker"):  # both processes ran with the one thread the command asked for
        assert record[side]["torch_threads"] == 1, side
        assert record[side]["env"]["OMP_NUM_THREADS"] == "1", side
    assert record["trainer"] == {"deterministic": None, "benchmark": None}
    assert record["machine"]["processor"] and record["machine"]["usable_cpus"] >= 1
    assert {"torch", "lightning", "numpy", "python"} <= set(first["versions"])


def test_the_record_names_every_setting_that_changes_float_results():
    record = run_record({"deterministic": True}, "cpu", process_record(), None)
    assert record["trainer"] == {"deterministic": True, "benchmark": None}
    assert record["attacker"] is None and record["device"] == "cpu"
    defender = record["defender"]
    assert set(defender["env"]) == set(THREAD_ENV)
    assert defender["torch_threads"] == torch.get_num_threads()
    assert defender["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert defender["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    json.dumps(record)  # plain JSON, as results.json and the W&B config need


def test_the_attacker_trains_with_the_defenders_thread_count_and_deterministic_mode(tmp_path, monkeypatch):
    """The attacker's process is forked from a server whose thread pools were sized when it started; a count set
    in the main process since (3 here: neither 1 nor the 2 cores' default) must reach the attacker too. And
    `--trainer.deterministic true` is what both sides ran under."""
    from stealbench.cli import main

    # Lightning turns deterministic mode on for the whole process and sets this variable: undone after the test
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset by the test")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.set_num_threads(3)
    try:
        assert main(["fit", "--attack", "random", "--attack.num_checkpoints", "1", "--victim.epochs", "1",
                     "--attack.epochs", "1", "--budget", "50", "--progress_bar", "false", "--output_dir",
                     str(tmp_path), "--name", "t", "--trainer.deterministic", "true"]) == 0
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.backends.cudnn.benchmark = before[2]
    record = json.loads((tmp_path / "t" / "results.json").read_text())["reproducibility"]
    assert record["trainer"]["deterministic"] is True
    for side in ("defender", "attacker"):
        assert record[side]["deterministic_algorithms"] is True, side
        assert record[side]["cudnn_benchmark"] is False, side
        assert record[side]["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8", side
    assert record["defender"]["torch_threads"] == 3
    assert record["attacker"]["torch_threads"] == 3
    assert record["attacker"]["torch_interop_threads"] == record["defender"]["torch_interop_threads"]
