"""Grids: expansion into `stealbench fit` argument lists, resume, W&B sweep definition and agent entry point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from stealbench import grid as grid_mod
from stealbench import grid_runner
from stealbench.cli import main
from stealbench.errors import ConfigError
from stealbench.grid import expand, load_grid
from stealbench.grid_runner import is_complete, run_grid
from stealbench.plugins import get_catalog
from stealbench.sweep import SWEEP_PARAMETER, check_definition, sweep_definition

REPO = Path(__file__).resolve().parents[1]

SPEC = {
    "common": {"victim": {"epochs": 3}, "progress_bar": False},
    "data": [{"name": "digits", "pool_fraction": 0.5}],
    "defenses": ["none", {"name": "deceptive", "beta": 1.0, "gamma": 0.1}],
    "attacks": [{"name": "jbda", "rounds": 2}, {"name": "random", "label": "nat", "budgets": [300]}],
    "label_modes": ["soft", "hard"],
    "budgets": [100, 200],
    "seeds": [0, 1],
}


def opt(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_expand_is_the_product_with_entry_parameters_and_deterministic_names():
    runs = expand(SPEC, name="g", output_dir="out")
    # data 1 x seeds 2 x [jbda: 2 labels x 2 budgets + random: 2 labels x 1 budget] x defenses 2
    assert len(runs) == 2 * (4 + 2) * 2
    assert [r.index for r in runs] == list(range(len(runs)))
    assert len({r.name for r in runs}) == len(runs)
    assert runs == expand(SPEC, name="g", output_dir="out")  # deterministic
    first = runs[0]
    assert first.name == "digits-pool_fraction0.5_none_jbda-rounds2_soft_b100_s0"
    dec = next(r for r in runs if r.identity["defense"] != "none")
    assert dec.identity["defense"] == "deceptive-beta1.0-gamma0.1"
    assert opt(dec.args, "--defense") == "deceptive" and opt(dec.args, "--defense.beta") == "1.0"
    assert opt(dec.args, "--defense.gamma") == "0.1" and opt(dec.args, "--attack.rounds") == "2"
    assert opt(dec.args, "--victim.epochs") == "3" and opt(dec.args, "--progress_bar") == "false"
    assert opt(dec.args, "--data.pool_fraction") == "0.5"
    assert opt(dec.args, "--output_dir") == "out" and opt(dec.args, "--name") == dec.name
    assert json.loads(opt(dec.args, "--wandb.tags")) == ["grid:g"]
    nat = [r for r in runs if r.identity["attack"] == "nat"]
    assert {r.identity["budget"] for r in nat} == {300}  # the attack's own budgets
    assert all("--attack.rounds" not in r.args for r in nat)
    # the component is chosen before its parameters are set
    assert dec.args.index("--defense") < dec.args.index("--defense.beta")


def test_expand_labels_leave_out_data_locations_and_exclude_rules_apply():
    spec = {**SPEC, "data": [{"name": "mnist", "root": "../shared/data"}],
            "exclude": [{"attack": "random", "label_mode": "hard"}, {"defense": "none", "budget": 200}]}
    runs = expand(spec, name="g", output_dir="out")
    assert all(r.name.startswith("mnist_") for r in runs)
    assert all(opt(r.args, "--data.root") == "../shared/data" for r in runs)
    assert not [r for r in runs if r.identity["attack"] == "nat" and r.identity["label_mode"] == "hard"]
    assert not [r for r in runs if r.identity["defense"] == "none" and r.identity["budget"] == 200]
    assert [r for r in runs if r.identity["defense"] == "none" and r.identity["budget"] == 100]


def test_pools_are_a_dimension_with_the_own_pool_unnamed_and_others_passed_as_pool_data():
    spec = {**SPEC, "data": [{"name": "mnist", "root": "../shared/data"}],
            "pools": ["own", {"name": "fashion-mnist", "root": "../shared/data"}],
            "exclude": [{"pool": "fashion-mnist", "attack": "jbda-rounds2"}]}
    runs = expand(spec, name="g", output_dir="out")
    own = [r for r in runs if r.identity["pool"] == "own"]
    ood = [r for r in runs if r.identity["pool"] == "fashion-mnist"]
    assert len(own) == len(expand({**spec, "pools": ["own"]}, name="g", output_dir="out"))
    assert own and all("--pool_data" not in r.args and r.name.startswith("mnist_") for r in own)
    assert ood and all(r.name.startswith("mnist-pool-fashion-mnist_") for r in ood)
    assert all(opt(r.args, "--pool_data") == "fashion-mnist" and opt(r.args, "--pool_data.root") == "../shared/data"
               for r in ood)
    assert {r.identity["attack"] for r in ood} == {"nat"}  # the exclude rule named the pool
    assert len({r.name for r in runs}) == len(runs)
    with pytest.raises(ConfigError, match="grid dimensions"):
        expand({**spec, "common": {"pool_data": "fashion-mnist"}}, name="g", output_dir="out")
    typo = expand({**spec, "pools": [{"name": "fashon-mnist"}]}, name="g", output_dir="out")
    with pytest.raises(ConfigError, match="fashon-mnist"):
        grid_mod.check_keys(typo)


@pytest.mark.parametrize("change, message", [
    ({"defenses": ["none", "none"]}, "same label"),
    ({"budgets": None, "attacks": ["jbda"]}, "budgets"),
    ({"label_modes": ["soft", "fuzzy"]}, "label_modes"),
    ({"seeds": ["zero"]}, "integers"),
    ({"colour": "blue"}, "unknown grid keys"),
    ({"common": {"budget": 10}}, "grid dimensions"),
    ({"defenses": [{"beta": 1.0}]}, "name"),
    ({"defenses": [{"name": "deceptive", "label": "a/b"}]}, "label"),
])
def test_expand_rejects_bad_grids(change, message):
    spec = {k: v for k, v in {**SPEC, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        expand(spec, name="g", output_dir="out")


def _fake_runner(calls: list[str], fail: set[str] = frozenset()):
    """Stands in for `stealbench fit`: writes what the runner writes, or fails like it (error.txt)."""
    def run(args: list[str]) -> None:
        folder = Path(opt(args, "--output_dir")) / opt(args, "--name")
        calls.append(folder.name)
        folder.mkdir(parents=True, exist_ok=True)
        if folder.name in fail:
            (folder / "error.txt").write_text("RuntimeError: boom\n")
            raise RuntimeError("boom")
        (folder / "results.json").write_text(json.dumps({"status": "complete"}))
    return run


def test_resume_skips_completed_runs_and_retries_failed_ones(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "output_dir": str(tmp_path / "runs")}))
    grid = load_grid(path)
    names = [r.name for r in grid.runs]
    calls: list[str] = []
    report = run_grid(grid, grid.runs[:5], runner=_fake_runner(calls, fail={names[2]}), progress=False)
    assert calls == names[:5]
    assert report.completed == names[:2] + names[3:5] and [n for n, _ in report.failed] == [names[2]]
    assert not report.ok and not is_complete(tmp_path / "runs" / names[2])

    calls.clear()
    report = run_grid(grid, runner=_fake_runner(calls), progress=False)  # the whole grid: resume
    assert calls == [names[2]] + names[5:]
    assert set(report.skipped) == set(names[:2] + names[3:5])
    assert report.ok and all(is_complete(tmp_path / "runs" / n) for n in names)
    # the failed attempt's error is kept aside, so the folder does not look failed any more
    assert not (tmp_path / "runs" / names[2] / "error.txt").exists()
    assert list((tmp_path / "runs" / names[2]).glob("error.previous-*.txt"))

    calls.clear()
    assert run_grid(grid, runner=_fake_runner(calls), progress=False).ok and calls == []


def test_grid_command_dry_run_and_only(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["grid", str(path), "--dry-run", "--only", "_nat_", "--only", "_s1"]) == 0
    out = capsys.readouterr().out
    assert "# 4 of 24 runs; output runs/g" in out
    assert out.count("stealbench fit --data digits --defense") == 4


def test_grid_command_fails_early_on_unknown_keys(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "defenses": ["none", "decepitve"]}))
    assert main(["grid", str(path), "--output-dir", str(tmp_path / "runs")]) == 2
    assert "decepitve" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _shipped_plugin_keys() -> set[str]:
    """Keys the plugins shipped under plugins/ register (read from their sources: they need not be installed)."""
    import re

    return {m for f in (REPO / "plugins").glob("*/src/**/*.py")
            for m in re.findall(r'register\(\s*"([\w.-]+)"', f.read_text())}


def test_shipped_grids_expand(capsys):
    files = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
    assert files
    shipped = _shipped_plugin_keys()
    assert "mad" in shipped  # the stealbench-mad plugin, which catalogue_mnist.yaml uses
    for path in files:
        grid = load_grid(path)
        assert grid.runs, path
        # every key is registered here, or by a plugin shipped in plugins/ (its runs need it installed)
        defenses = get_catalog().defenses
        defense_of = {run.name: run.args[run.args.index("--defense") + 1] for run in grid.runs}
        needing = {key for key in defense_of.values() if key not in defenses}
        assert needing <= shipped, (path, needing)
        grid_mod.check_keys([run for run in grid.runs if defense_of[run.name] in defenses])


def test_sweep_definition_covers_every_run_once(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    grid = load_grid(path)
    definition = sweep_definition(grid, program="g.yaml")
    assert check_definition(definition) == []
    assert definition["method"] == "grid"
    assert definition["parameters"][SWEEP_PARAMETER]["values"] == [r.name for r in grid.runs]
    assert definition["command"] == ["${env}", "stealbench", "grid", "${program}", "${args}"]

    out = tmp_path / "sweep.yaml"
    assert main(["grid", str(path), "--sweep", "--sweep-file", str(out), "--program", "g.yaml"]) == 0
    assert yaml.safe_load(out.read_text()) == definition
    assert "wandb agent" in capsys.readouterr().out


def test_sweep_agent_command_runs_the_named_run(tmp_path, monkeypatch):
    """wandb's own agent code turns the sweep's command and a parameter value into the command it runs."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "output_dir": str(tmp_path / "runs")}))
    grid = load_grid(path)
    definition = sweep_definition(grid, program=str(path))
    target = grid.runs[7]
    command = {"args": {SWEEP_PARAMETER: {"value": target.name}}, "program": definition["program"]}
    sweep_vars = sweep_utils.create_sweep_command_args(command)
    sweep_vars.update(program=[command["program"]], env=["/usr/bin/env"])
    argv = []  # as wandb.wandb_agent.Agent._command_run expands `${...}` chunks
    for chunk in sweep_utils.create_sweep_command(list(definition["command"])):
        argv += sweep_vars.get(chunk[2:-1], []) if chunk.startswith("${") else [chunk]
    assert argv == ["/usr/bin/env", "stealbench", "grid", str(path), f"--{SWEEP_PARAMETER}={target.name}"]

    calls: list[str] = []
    monkeypatch.setattr(grid_runner, "_run_in_process", _fake_runner(calls))
    assert main(argv[2:]) == 0
    assert calls == [target.name]
    assert main(argv[2:]) == 0 and calls == [target.name]  # already complete: skipped
    assert main(["grid", str(path), "--grid_run", "no_such_run"]) == 2


@pytest.mark.skipif(os.environ.get("STEALBENCH_SKIP_SLOW") == "1", reason="real run")
def test_wandb_agent_runs_a_real_grid_run(tmp_path, monkeypatch):
    """One tiny real run, started the way `wandb agent` starts it (its AgentProcess, a subprocess), no server."""
    from wandb import wandb_agent

    spec = {"common": {"victim": {"epochs": 1}, "progress_bar": False, "attack.epochs": 1},
            "data": ["digits"], "defenses": ["none"], "attacks": [{"name": "random", "num_checkpoints": 2}],
            "budgets": [100], "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    grid = load_grid(path)
    definition = sweep_definition(grid, program=str(path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    agent = wandb_agent.Agent(api=None, queue=None)
    agent._sweep_command = definition["command"]
    agent._command_run({"run_id": "testrun1", "program": definition["program"],
                        "args": {SWEEP_PARAMETER: {"value": grid.runs[0].name}}})
    proc = agent._run_processes["testrun1"]
    assert proc.wait(timeout=300) == 0
    results = json.loads((tmp_path / "runs" / grid.runs[0].name / "results.json").read_text())
    assert results["status"] == "complete" and results["identity"]["budget"] == 100


def test_sigterm_stops_the_grid_and_a_rerun_resumes(tmp_path):
    import signal

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "output_dir": str(tmp_path / "runs")}))
    grid = load_grid(path)
    calls: list[str] = []
    done = _fake_runner(calls)

    def runner(args):
        if len(calls) == 2:
            calls.append("terminated")
            os.kill(os.getpid(), signal.SIGTERM)
        done(args)

    before = signal.getsignal(signal.SIGTERM)
    report = run_grid(grid, grid.runs[:5], runner=runner, progress=False)
    assert report.interrupted and len(report.completed) == 2 and not report.failed
    assert signal.getsignal(signal.SIGTERM) is before
    calls.clear()
    report = run_grid(grid, grid.runs[:5], runner=_fake_runner(calls), progress=False)
    assert len(calls) == 3 and len(report.skipped) == 2


def test_label_modes_take_any_registered_mode_with_options_and_skip_defenses_they_do_not_answer():
    spec = {**SPEC, "defenses": ["none", {"name": "deceptive", "beta": 1.0, "gamma": 0.2}, "topk"],
            "attacks": [{"name": "jbda", "rounds": 2}], "budgets": [100], "seeds": [0],
            "label_modes": ["soft", "invert", {"mode": "average", "k": 4}, {"mode": "average", "k": 2, "scale": 0.1}]}
    runs = expand(spec, name="g", output_dir="out")
    cells = {(r.identity["label_mode"], r.identity["defense"]) for r in runs}
    # invert answers deceptive only (and runs against the undefended baseline); soft and average answer all
    assert ("invert", "deceptive-beta1.0-gamma0.2") in cells and ("invert", "none") in cells
    assert ("invert", "topk") not in cells and ("soft", "topk") in cells and ("average-k4", "topk") in cells
    assert len(runs) == 3 + 2 + 3 + 3
    variant = next(r for r in runs if r.identity["label_mode"] == "average-k2-scale0.1")
    assert opt(variant.args, "--label_mode") == "average" and opt(variant.args, "--label_options.k") == "2"
    assert opt(variant.args, "--label_options.scale") == "0.1" and "_average-k2-scale0.1_" in variant.name
    with pytest.raises(ConfigError, match="label_options.k do not apply to label_mode 'smooth'"):
        expand({**spec, "label_modes": [{"mode": "smooth", "k": 3}]}, name="g", output_dir="out")
    with pytest.raises(ConfigError, match="unknown label_mode 'fuzzy'"):
        expand({**spec, "label_modes": ["fuzzy"]}, name="g", output_dir="out")


def test_a_grid_with_soft_hard_and_invert_runs_one_run_per_mode(tmp_path):
    spec = {"common": {"victim": {"epochs": 2}, "progress_bar": False, "attack.epochs": 1,
                       "attack.num_checkpoints": 1},
            "data": ["digits"], "defenses": [{"name": "deceptive", "beta": 1.0, "gamma": 0.2}],
            "attacks": ["random"], "label_modes": ["soft", "hard", "invert"], "budgets": [100],
            "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(spec))
    grid = load_grid(path)
    assert [r.identity["label_mode"] for r in grid.runs] == ["soft", "hard", "invert"]
    assert run_grid(grid, progress=False).ok
    for run in grid.runs:
        results = json.loads((tmp_path / "runs" / run.name / "results.json").read_text())
        assert results["status"] == "complete" and results["identity"]["label_mode"] == run.identity["label_mode"]
        assert results["extra_metrics"]["label_mode/recovery_rows"] == 100  # every query audited
    soft, _, invert = (json.loads((tmp_path / "runs" / r.name / "results.json").read_text())["extra_metrics"]
                       for r in grid.runs)
    assert "attack/label_mode/estimated_from" in invert and not any("solved" in k for k in invert)
    assert soft["label_mode/recovery_l1"] > 0  # soft keeps the defense's perturbation


def _tiny_grid(tmp_path, **extra):
    spec = {"common": {"victim": {"epochs": 1, "cache_dir": str(tmp_path / "cache")}, "progress_bar": False,
                       "attack.epochs": 1, "attack.num_checkpoints": 1, "sandbox": "off"},
            "data": ["digits"], "defenses": ["none", {"name": "deceptive", "beta": 1.0, "gamma": 0.2}],
            "attacks": ["random"], "budgets": [100], "output_dir": str(tmp_path / "runs"), **extra}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_grid(path)


def test_jobs_run_cells_at_once_train_the_shared_victim_once_and_match_one_by_one(tmp_path, monkeypatch):
    from stealbench import grid_jobs

    monkeypatch.setattr(grid_jobs, "available_cores", lambda: 2)  # 1 thread per job, as one by one in this suite
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = _tiny_grid(tmp_path / "parallel")
    assert len(grid.runs) == 2  # none and deceptive: one victim (digits, seed 0)
    report = run_grid(grid, jobs=2)
    assert report.ok and sorted(report.completed) == sorted(r.name for r in grid.runs)
    logs = {r.name: (tmp_path / "parallel" / "runs" / ".logs" / f"{r.name}.log").read_text() for r in grid.runs}
    assert sum("victim trained" in text for text in logs.values()) == 1, logs  # the other waited, then loaded it
    assert sum("victim loaded from cache" in text for text in logs.values()) == 1, logs
    one_by_one = _tiny_grid(tmp_path / "serial")
    assert run_grid(one_by_one, subprocess_mode=True, progress=False).ok
    for run in grid.runs:
        metrics = [json.loads((root / "runs" / run.name / "results.json").read_text())["metrics"]
                   for root in (tmp_path / "parallel", tmp_path / "serial")]
        assert metrics[0]["surrogate/acc"] == metrics[1]["surrogate/acc"], run.name
    # a rerun finds everything complete; the logs folder is not taken for a run
    assert run_grid(grid, jobs=2).skipped == [r.name for r in grid.runs]
    assert main(["leaderboard", str(tmp_path / "parallel" / "runs"), "--output_dir", str(tmp_path / "board")]) == 0


def test_jobs_pass_sigterm_to_every_running_cell_and_a_rerun_resumes(tmp_path):
    import signal
    import subprocess
    import time

    grid = _tiny_grid(tmp_path, seeds=[0, 1])
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "stealbench", "grid", str(tmp_path / "tiny.yaml"), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    logs = tmp_path / "runs" / ".logs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(logs.glob("*.log"))) < 2:
        time.sleep(0.2)
    assert len(list(logs.glob("*.log"))) == 2, "two cells never started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "run the same command again to resume" in out
    complete = [r for r in grid.runs if (tmp_path / "runs" / r.name / "results.json").exists()]
    assert len(complete) < len(grid.runs)
    rerun = subprocess.run([sys.executable, "-m", "stealbench", "grid", str(tmp_path / "tiny.yaml"), "--jobs", "2"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert all((tmp_path / "runs" / r.name / "results.json").exists() for r in grid.runs)
