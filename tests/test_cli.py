"""`stealbench fit` end to end on digits, and its error handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FAST_ATTACK, FAST_RUN, REPO
from stealbench.cli import main
from stealbench.defenses.base import Defense
from stealbench.results import METRIC_KEYS
from stealbench.attacker.label_modes import make_label_mode


def fit(tmp_path, *args):
    attack = args[args.index("--attack") + 1] if "--attack" in args else "jbda"
    # the attack's fast options after the arguments: they must belong to the attack chosen there
    return main(["fit", "--output_dir", str(tmp_path / "runs"), *FAST_RUN, *args, *FAST_ATTACK.get(attack, [])])


def only_run(tmp_path) -> Path:
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_headline_run_writes_a_complete_folder(tmp_path, capsys):
    assert fit(tmp_path, "--defense", "deceptive", "--attack", "jbda", "--defense.beta", "0.5") == 0
    out = capsys.readouterr().out
    for expected in ("data", "victim", "defense", "attack", "budget", "seed", "output", "W&B", "round  1",
                     "round  2", "surrogate/acc"):
        assert expected in out
    run = only_run(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "complete"
    assert set(METRIC_KEYS) <= set(results["metrics"])
    assert results["identity"] == {"data": "digits", "defense": "deceptive", "attack": "jbda", "victim_arch": "cnn",
                                   "surrogate_arch": "cnn", "budget": 200, "seed": 0, "label_mode": "soft"}
    assert [p["queries"] for p in results["curve"]] == [100, 200]
    assert all({"queries", "round", "surrogate/acc", "surrogate/fidelity"} <= set(p) for p in results["curve"])
    assert results["metrics"]["queries"] == 200
    assert results["metrics"]["surrogate/acc"] == results["curve"][-1]["surrogate/acc"]  # final, not best
    assert results["splits"] == {"victim_train": 808, "defender_holdout": 90, "attacker_pool": 451, "eval": 448}
    assert results["config"]["defense"]["init_args"]["beta"] == 0.5
    assert "stealbench.defenses.deceptive" in results["versions"]["plugins"]
    assert results["metrics"]["victim/acc"] > 0.8  # a real victim, even with 3 epochs
    assert results["metrics"]["defense/top1_changed"] < 0.05 and results["metrics"]["defense/kl_nats"] > 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["budget"] == 200
    assert (run / "curve.png").stat().st_size > 1000
    assert not (run / "error.txt").exists()


def test_second_run_reuses_the_cached_victim_and_repeats_exactly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert fit(tmp_path, "--name", "first") == 0
    assert "victim trained" in capsys.readouterr().out
    assert fit(tmp_path, "--name", "second") == 0
    assert "victim loaded from cache" in capsys.readouterr().out
    first = json.loads((tmp_path / "runs" / "first" / "results.json").read_text())
    second = json.loads((tmp_path / "runs" / "second" / "results.json").read_text())
    assert first["metrics"] == second["metrics"] and first["curve"] == second["curve"]  # seeded end to end
    cached = first["victim"]["path"]
    assert fit(tmp_path, "--name", "third", "--victim.checkpoint", cached, "--attack", "random",
               "--label_mode", "hard") == 0
    third = json.loads((tmp_path / "runs" / "third" / "results.json").read_text())
    assert third["victim"]["origin"] == "checkpoint" and third["identity"]["label_mode"] == "hard"
    assert third["metrics"]["victim/acc"] == first["metrics"]["victim/acc"]
    assert fit(tmp_path, "--name", "third") == 2  # a completed folder is never overwritten
    assert "already holds a completed run" in capsys.readouterr().err


def test_label_modes():
    probs = torch.tensor([[0.2, 0.7, 0.1]])
    assert torch.equal(make_label_mode("hard", 3)(probs), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(make_label_mode("soft", 3)(probs), probs)


@pytest.mark.parametrize("args,message", [
    (["--defense", "deceptiv"], "did you mean: deceptive"),
    (["--attack", "jdba"], "jbda"),
    (["--budget", "50"], "smaller than the JBDA seed set"),
    (["--defense", "deceptive", "--defense.beta", "-1"], "defense.beta must be > 0"),
    (["--victim.arch", "resnet18x"], "victim.arch"),
    (["--data", "mnist", "--data.root", "/nonexistent"], "--data.root"),
    (["--attack", "random", "--budget", "5000"], "exceeds the attacker pool"),
    (["--label_options.samples", "8"], "do not apply to label_mode 'soft'"),
])
def test_bad_input_stops_with_one_clear_message(tmp_path, capsys, args, message):
    assert fit(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert message.lower() in err.lower() and "Traceback" not in err
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("results.json"))


@pytest.mark.parametrize("args,message", [
    (["--defense.beta", "abc"], "beta"),
    (["--label_mode", "sharp"], "label_mode"),
    (["--trainer.max_epochs", "5"], "max_epochs"),  # epochs are per phase: --victim.epochs, --attack.*
])
def test_type_errors_name_the_key(tmp_path, capsys, args, message):
    # parse errors return 2 with one short message (tests/test_bad_input.py), no SystemExit
    assert fit(tmp_path, "--defense", "deceptive", *args) == 2
    assert message in capsys.readouterr().err


class NotAProbability(Defense):
    """Test double: releases scores that do not sum to one."""

    def forward(self, x, probs):
        return probs * 3


def test_a_broken_defense_stops_the_run_without_complete_results(tmp_path, capsys):
    assert fit(tmp_path, "--defense", f"{__name__}.NotAProbability") == 2
    assert "do not sum to 1" in capsys.readouterr().err
    run = only_run(tmp_path)
    assert not (run / "results.json").exists() and (run / "error.txt").exists()


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stealbench", "fit", "--defense", "reverse-sigmoid",
                           "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown defense 'reverse-sigmoid'" in proc.stderr and "Traceback" not in proc.stderr


def test_every_config_file_parses(capsys):
    # configs/experiments/ holds grid files, parsed by the grid's own tests
    fit_configs = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "experiments" not in p.parts)
    assert len(fit_configs) >= 8, "configs/ holds examples"
    # --print_config checks what fit checks: these two need what a CPU test machine lacks, and say so in one line
    needs = {"gpu.yaml": "no CUDA GPU is visible", "imagefolder.yaml": "path/to/my_images"}
    for path in fit_configs:
        if path.name in needs and not (path.name == "gpu.yaml" and torch.cuda.is_available()):
            assert main(["fit", "--config", str(path), "--print_config"]) == 2, path
            assert needs[path.name] in capsys.readouterr().err, path
            continue
        with pytest.raises(SystemExit) as info:
            main(["fit", "--config", str(path), "--print_config"])
        assert info.value.code == 0, path
        printed = yaml.safe_load(capsys.readouterr().out)
        assert {"data", "defense", "attack", "budget"} <= set(printed), path


@pytest.mark.parametrize("how", ["command line", "config file"])
def test_a_chosen_component_starts_from_its_own_defaults(tmp_path, capsys, how):
    """jsonargparse carried the default attack's same-named options over: `--attack activethief` ran with JBDA's
    rounds=6 instead of activethief's 5, silently."""
    if how == "command line":
        args = ["--attack", "activethief", "--attack.epochs", "2"]
    else:
        config = tmp_path / "c.yaml"
        config.write_text("attack:\n  class_path: activethief\n  init_args: {epochs: 2}\n")
        args = ["--config", str(config)]
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    attack = yaml.safe_load(capsys.readouterr().out)["attack"]["init_args"]
    assert attack["rounds"] == 5 and attack["epochs"] == 2 and attack["strategy"] == "kcenter"
