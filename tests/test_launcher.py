"""`stealbench grid --launcher submitit`: each cell a submitit job, run end to end through the local backend."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from stealbench.cli import main

submitit = pytest.importorskip("submitit", reason="submitit is in the `cluster` and `test` extras")


def _tiny_grid_file(tmp_path):
    """tests/test_grid.py's smallest grid: digits, one seed, two cells (none and deceptive) sharing one victim."""
    spec = {"common": {"victim": {"epochs": 1, "cache_dir": str(tmp_path / "cache")}, "progress_bar": False,
                       "attack.epochs": 1, "attack.num_checkpoints": 1, "sandbox": "off"},
            "data": ["digits"], "defenses": ["none", {"name": "deceptive", "beta": 1.0, "gamma": 0.2}],
            "attacks": ["random"], "budgets": [100], "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


LOCAL = ["--launcher", "submitit", "--launcher.backend", "local", "--launcher.cpus_per_task", "1",
         "--launcher.array_parallelism", "2", "--launcher.timeout_min", "10"]


def test_local_backend_runs_each_cell_as_a_job_and_a_rerun_submits_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _tiny_grid_file(tmp_path)
    assert main(["grid", str(path), *LOCAL]) == 0
    out = capsys.readouterr().out
    runs = tmp_path / "runs"
    names = ["digits_none_random_soft_b100_s0", "digits_deceptive-beta1.0-gamma0.2_random_soft_b100_s0"]
    for name in names:
        results = json.loads((runs / name / "results.json").read_text())
        assert results["status"] == "complete", name
        assert (runs / ".logs" / f"{name}.log").exists()  # the cell's output, as with --jobs
        assert f"grid run {name}: done in" in out and "(job " in out
    assert "grid tiny: 2 completed now, 0 were already complete, 0 failed" in out
    job_files = sorted(p.name for p in (runs / ".submitit").iterdir())
    assert job_files
    # the same command again: both cells complete, no job submitted
    assert main(["grid", str(path), *LOCAL]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 2 already complete, 0 to run" in out and "submitted" not in out
    assert sorted(p.name for p in (runs / ".submitit").iterdir()) == job_files
    # .submitit and .logs are not taken for runs
    assert main(["leaderboard", str(runs), "--output_dir", str(tmp_path / "leaderboard")]) == 0


def test_a_failed_job_names_its_id_and_stderr(tmp_path):
    from stealbench.grid import load_grid
    from stealbench.grid_launcher import LauncherOptions
    from stealbench.grid_runner import run_grid

    grid = load_grid(_tiny_grid_file(tmp_path))
    run = grid.runs[0]
    run.args[run.args.index("--budget") + 1] = "-5"  # `stealbench fit` refuses it: exit status 2
    report = run_grid(grid, [run], launcher=LauncherOptions(backend="local", cpus_per_task=1))
    [(name, message)] = report.failed
    assert name == run.name and "exited with status 2" in message
    assert "(job " in message and "stderr " in message and ".submitit" in message


@pytest.mark.parametrize("argv, message", [
    (["--launcher.backend", "local"], "--launcher.backend needs --launcher submitit"),
    (["--launcher", "submitit", "--jobs", "2"], "do not go together"),
    (["--launcher", "submitit", "--sweep"], "do not go together"),
    (["--launcher", "slurm"], "invalid choice"),
    (["--launcher", "submitit", "--launcher.backend", "ray"], "invalid choice"),
    (["--launcher", "submitit", "--launcher.timeout_min", "0"], "--launcher.timeout_min must be an integer >= 1"),
    (["--launcher", "submitit", "--launcher.mem_gb", "lots"], "--launcher.mem_gb expects a number"),
    (["--launcher", "submitit", "--launcher.backend", "local", "--launcher.partition", "gpu"], "SLURM option"),
    (["--launcher", "submitit", "--launcher.folder"], "expected one argument"),
])
def test_bad_launcher_options_fail_in_one_line_before_the_grid_is_read(argv, message, capsys):
    assert main(["grid", "no-such-file.yaml", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_without_submitit_the_error_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert main(["grid", "no-such-file.yaml", "--launcher", "submitit"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'stealbench[cluster]'" in err and len(err.strip().splitlines()) == 1, err


def test_slurm_backend_without_slurm_says_so(tmp_path, monkeypatch):
    import shutil

    from stealbench.errors import ConfigError
    from stealbench.grid import load_grid
    from stealbench.grid_launcher import LauncherOptions, make_executor

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no srun on PATH
    with pytest.raises(ConfigError, match="no SLURM here.*--launcher.backend local"):
        make_executor(load_grid(_tiny_grid_file(tmp_path)), LauncherOptions())


def test_grid_job_slots_pin_one_gpu_each_and_share_when_there_are_more_jobs(monkeypatch):
    """`grid --jobs N` on G GPUs: slot k's cells see GPU k mod G (one job per device, or several per device);
    a cell that asks for several devices sees all of them; without GPUs nothing is pinned."""
    from stealbench.grid_jobs import child_env, slot_gpu, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpus = visible_gpus()
    assert gpus == ["3", "5"]
    assert [slot_gpu(k, gpus, ["--seed", "0"]) for k in range(4)] == ["3", "5", "3", "5"]
    assert slot_gpu(1, gpus, ["--trainer.devices", "2"]) is None
    assert slot_gpu(1, gpus, ["--trainer.devices=[0,1]"]) is None
    assert slot_gpu(1, gpus, ["--trainer.devices", "1"]) == "5"
    assert slot_gpu(0, [], ["--seed", "0"]) is None
    assert child_env(2, "5")["CUDA_VISIBLE_DEVICES"] == "5" and child_env(2, "5")["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []  # hidden GPUs: the jobs run on the CPU
