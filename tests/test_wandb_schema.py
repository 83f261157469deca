"""W&B schema: an offline run, read back from its .wandb log, carries the identity in config and the DESIGN.md §3
metrics in summary (so the W&B runs table grouped by these keys is itself a leaderboard), and the curve in history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stealbench.analysis.runs import IDENTITY_KEYS
from stealbench.results import CURVE_KEYS, METRIC_KEYS


def _leet(*args: str) -> str:
    exe = Path(sys.executable).parent / "wandb"
    proc = subprocess.run([str(exe), "leet", "inspect", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_offline_run_reads_back_with_identity_config_metric_summary_and_curve(tmp_path, monkeypatch):
    from stealbench.lightning_cli import fit_main

    monkeypatch.setenv("WANDB_MODE", "offline")
    # the same victim settings as test_grid's real run: one of the two loads the other's cached victim
    fit_main(["--victim.epochs", "1", "--attack", "random", "--attack.epochs", "1", "--attack.num_checkpoints", "2",
              "--budget", "100", "--progress_bar", "false", "--output_dir", str(tmp_path), "--name", "w"])
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    (log,) = (tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb")

    run = json.loads(_leet("--summary", "--json", str(log)))
    assert run["state"] == "finished" and run["name"] == "w"
    config, summary = run["config"], run["summary"]
    for key in IDENTITY_KEYS:
        assert config[key] == results["identity"][key], key
    assert config["plugins"] == results["versions"]["plugins"] and config["plugins"]
    assert config["config"]["attack"]["init_args"]["num_checkpoints"] == 2  # the resolved config rides along
    # threads, processor, deterministic modes of both processes: added at the end, when the attacker's are known
    assert config["reproducibility"] == results["reproducibility"]
    assert config["reproducibility"]["attacker"]["torch_threads"] >= 1
    for key in METRIC_KEYS:
        assert summary[key] == pytest.approx(results["metrics"][key], abs=1e-9), key

    history = [json.loads(line)["history"]["item"] for line in _leet("--json", str(log)).splitlines()
               if '"type":"history"' in line and "surrogate/acc" in line]
    assert [h["queries"] for h in history] == [p["queries"] for p in results["curve"]]
    assert all(set(CURVE_KEYS) <= set(h) for h in history)
    # the attacker's relayed training log lands under attack/: it never writes the framework's keys
    logged = {k for line in _leet("--json", str(log)).splitlines() if '"type":"history"' in line
              for k in json.loads(line)["history"]["item"]}
    assert "attack/surrogate/train_loss" in logged and "surrogate/train_loss" not in logged
