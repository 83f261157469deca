"""Hardening, the runtime half: bad paths, neighbours, signals, an untrustworthy victim cache, damaged data,
missing hardware and an unreachable W&B end in one clear message and the right exit code, never a traceback,
a hang or a wrong result.

End-to-end cases run `stealbench fit` in a subprocess on `digits`; the rest call the modules directly.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import stealbench.runner
from stealbench.config import VictimConfig, WandbConfig
from stealbench.errors import ConfigError, StealbenchError
from stealbench.rundir import RunDirBusyError, is_busy, open_run_dir, record_failure
from stealbench.signals import RunInterrupted, exit_code, handle_signals, spawn_child
from stealbench.training import TrainSettings

from conftest import FAST

#: the runner calls the hardening hooks (open_run_dir, handle_signals, check_accelerator); until the integrator
#: wires them in, the end-to-end cases that depend on them are expected to fail
INTEGRATED = "open_run_dir" in inspect.getsource(stealbench.runner)
needs_integration = pytest.mark.xfail(not INTEGRATED, strict=False,
                                      reason="runner.py / lightning_cli.py / cli.py do not call the hooks yet")


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _fit(args: list[str], timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stealbench", "fit", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env))


def _assert_clean_failure(proc, code: int, *needles: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    for needle in needles:
        assert needle.lower() in text.lower(), text[-3000:]


# ------------------------------------------------------------------------------------------------------ paths

@needs_integration
def test_fit_refuses_a_run_name_that_leaves_the_output_folder(tmp_path):
    # the other bad names go through the same check: test_open_run_dir_rejects_bad_names
    out = tmp_path / "work" / "runs"
    proc = _fit(["--data", "digits", *FAST, "--output_dir", str(out), "--name", "../escape"], timeout=120)
    _assert_clean_failure(proc, 2, "--name", "single folder name")
    assert not list(tmp_path.rglob("results.json")) and not (tmp_path / "work" / "escape").exists()


@needs_integration
def test_fit_with_output_dir_that_is_a_file(tmp_path):
    target = tmp_path / "runs"
    target.write_text("not a folder")
    proc = _fit(["--data", "digits", *FAST, "--output_dir", str(target), "--name", "r"], timeout=120)
    _assert_clean_failure(proc, 2, "--output_dir", "is a file")
    assert not list(tmp_path.rglob("results.json"))


@pytest.mark.parametrize("name, message", [("../x", "single folder name"), ("/abs", "single folder name"),
                                           (".", "not a folder name"), ("..", "not a folder name"),
                                           ("", "non-empty"), ("a\x00b", "single folder name"),
                                           ("x" * 300, "at most 200")])
def test_open_run_dir_rejects_bad_names(tmp_path, name, message):
    with pytest.raises(ConfigError, match=message):
        open_run_dir(tmp_path / "out", name, "default")
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["out"])


def test_open_run_dir_rejects_unusable_output_dirs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--output_dir .* is a file"):
        open_run_dir(tmp_path / "file", "r", "d")
    with pytest.raises(ConfigError, match="--output_dir .* cannot be created"):
        open_run_dir(tmp_path / "file" / "below", "r", "d")
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match="not writable"):
                open_run_dir(ro, "r", "d")
        finally:
            ro.chmod(0o755)


def test_open_run_dir_locks_sets_old_errors_aside_and_refuses_complete_runs(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "error.txt").write_text("old failure")
    run = open_run_dir(tmp_path, "r", "d")
    assert run.path == folder and not (folder / "error.txt").exists()
    assert list(folder.glob("error.previous-*.txt"))
    assert is_busy(folder) == os.getpid()
    with pytest.raises(RunDirBusyError, match=rf"run folder .*r is in use by another stealbench process \(pid "
                                              rf"{os.getpid()}\)"):
        open_run_dir(tmp_path, "r", "d")  # a second open file description conflicts, as another process would
    run.release()
    assert is_busy(folder) is None
    (folder / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a completed run"):
        open_run_dir(tmp_path, "r", "d")
    assert is_busy(folder) is None  # the refused attempt released its lock


def test_record_failure_says_interrupted(tmp_path):
    assert "interrupted by SIGTERM" in record_failure(tmp_path, RunInterrupted(signal.SIGTERM)).read_text()
    assert "interrupted by Ctrl-C" in record_failure(tmp_path, KeyboardInterrupt()).read_text()
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        text = record_failure(tmp_path, exc).read_text()
    assert text.startswith("failed: ValueError: bad value") and "Traceback" in text


# ------------------------------------------------------------------------------------------------ neighbours

@needs_integration
def test_two_fits_with_the_same_name_one_fails_clearly(tmp_path):
    long = ["--attack.rounds", "50", "--attack.epochs_per_round", "50", "--budget", "5000"]
    args = ["--data", "digits", *FAST, "--output_dir", str(tmp_path), "--name", "same"]
    first = subprocess.Popen([sys.executable, "-m", "stealbench", "fit", *args, *long], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        _wait_for(first, "victim acc", timeout=240)
        second = _fit(args, timeout=120)
        _assert_clean_failure(second, 2, "is in use by another stealbench process", f"pid {first.pid}")
        assert first.poll() is None  # the first run goes on, undisturbed
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert not (tmp_path / "same" / "results.json").exists()
    assert "interrupted by SIGTERM" in (tmp_path / "same" / "error.txt").read_text()


def test_grid_skips_a_cell_another_process_holds(tmp_path):
    import yaml

    from stealbench.grid import load_grid
    from stealbench.grid_runner import run_grid

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"defenses": ["none"], "attacks": ["random"], "budgets": [10, 20],
                                    "output_dir": str(tmp_path / "runs")}))
    grid = load_grid(path)
    calls = []

    def runner(args):
        folder = Path(args[args.index("--output_dir") + 1]) / args[args.index("--name") + 1]
        calls.append(folder.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps({"status": "complete"}))

    held = open_run_dir(grid.output_dir, grid.runs[0].name, "d")  # "another grid" is running this cell
    try:
        report = run_grid(grid, runner=runner, progress=False)
    finally:
        held.release()
    assert calls == [grid.runs[1].name] and report.busy == [grid.runs[0].name] and not report.failed


def test_grid_stops_on_ctrl_c_without_counting_a_failure(tmp_path):
    import yaml

    from stealbench.grid import load_grid
    from stealbench.grid_runner import run_grid

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"defenses": ["none"], "attacks": ["random"], "budgets": [10, 20, 30],
                                    "output_dir": str(tmp_path / "runs")}))
    grid = load_grid(path)
    calls = []

    def runner(args):
        calls.append(args)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends

    before = signal.getsignal(signal.SIGINT)
    report = run_grid(grid, runner=runner, progress=False)
    assert len(calls) == 1 and report.interrupted and report.interrupt_code == 130 and not report.failed
    assert signal.getsignal(signal.SIGINT) is before


# -------------------------------------------------------------------------------------------------- signals

def _wait_for(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """Read proc's stdout until a line contains `text`; keep draining it afterwards so the child never blocks."""
    seen: list[str] = []
    found = threading.Event()

    def read():
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout) or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"never saw {text!r}: {''.join(seen)[-2000:]}")
    return "".join(seen)


@needs_integration
@pytest.mark.parametrize("signum, code, words", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_signal_during_fit_exits_with_its_code_and_says_interrupted(tmp_path, signum, code, words):
    args = ["--data", "digits", "--victim.epochs", "2", "--attack.rounds", "50", "--attack.epochs_per_round", "50",
            "--budget", "5000", "--progress_bar", "false", "--output_dir", str(tmp_path), "--name", "r"]
    proc = subprocess.Popen([sys.executable, "-m", "stealbench", "fit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env())
    _wait_for(proc, "victim acc", timeout=240)  # the victim phase is over: surrogate training has begun
    time.sleep(1.0)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    folder = tmp_path / "r"
    assert not (folder / "results.json").exists()
    assert f"interrupted by {words}" in (folder / "error.txt").read_text()
    assert is_busy(folder) is None


def test_handle_signals_raises_run_interrupted_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as info:
        with handle_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert exit_code(info.value) == 143 and "SIGTERM" in str(info.value)
    assert exit_code(KeyboardInterrupt()) == 130 and exit_code(ValueError()) is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_lightning_fit_propagates_sigterm():
    """Lightning's own SIGTERM handler must not turn the signal into a quiet exit 0 (SIGTERMException)."""
    from stealbench.training import fit

    class Killer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return self.lin(x)

    x, targets = torch.randn(64, 4), torch.softmax(torch.randn(64, 2), -1)
    with pytest.raises(RunInterrupted):
        with handle_signals():
            fit(Killer(), x, targets, 50, TrainSettings(batch_size=8, trainer={"accelerator": "cpu"}), seed=0)


def test_spawned_child_dies_with_its_parent(tmp_path):
    pid_file = tmp_path / "child.pid"
    child_code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = tmp_path / "parent.py"
    script.write_text("import sys\nfrom stealbench.signals import spawn_child\n"
                      f"spawn_child([sys.executable, '-c', {child_code!r}])\n")
    parent = subprocess.Popen([sys.executable, str(script)], env=_env())
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.kill()  # SIGKILL: the parent cannot forward anything; the kernel's parent-death signal must act
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


def test_spawn_child_forwards_sigterm_and_raises(tmp_path):
    def later():
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=later, daemon=True).start()
    t0 = time.time()
    with pytest.raises(RunInterrupted):
        spawn_child([sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.time() - t0 < 30


# ------------------------------------------------------------------------------------------------ victim cache

class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _blobs(n=400, seed=0):
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 3  # one task, any sample seed
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = centers[y] + torch.randn(n, 16, generator=g) * 0.5
    return x.view(n, 1, 4, 4), y


def _obtain(tmp_path, trainer=None, check=True, check_shift=0, **victim):
    from stealbench.victim import obtain_victim

    x, y = _blobs()
    cfg = VictimConfig(arch="tiny", epochs=3, cache_dir=str(tmp_path / "cache"), **victim)
    settings = TrainSettings(batch_size=32, lr=victim.get("lr", 1e-2), trainer={"accelerator": "cpu",
                                                                                  **(trainer or {})})
    cx, cy = _blobs(100, seed=1) if check else (None, None)
    if check_shift:  # wrong check labels: the victim looks like it learned nothing
        cy = (cy + check_shift) % 4
    return obtain_victim(_Tiny, cfg, {"dataset": "blobs"}, 0, x, y, 4, settings, check_x=cx, check_y=cy)


def test_a_crippling_trainer_option_is_never_cached(tmp_path, capsys, one_thread):
    crippled = _obtain(tmp_path, {"limit_train_batches": 1}, check=False)
    assert crippled.origin == "trained" and "limit_train_batches" in crippled.not_cached
    assert "victim not cached" in capsys.readouterr().out
    assert not list((tmp_path / "cache").rglob("*.pt"))
    full = _obtain(tmp_path)
    assert full.origin == "trained" and full.not_cached is None and full.check_acc > 0.9
    assert _obtain(tmp_path).origin == "cache"
    # an option that changes training but can be keyed gets its own entry
    assert _obtain(tmp_path, {"gradient_clip_val": 0.5}).origin == "trained"
    assert _obtain(tmp_path, {"gradient_clip_val": 0.5}).origin == "cache"


def test_cache_key_covers_every_training_field():
    from stealbench.victim import cache_key

    net = _Tiny()
    keys = {cache_key({}, VictimConfig(), 0, net), cache_key({}, VictimConfig(epochs=11), 0, net),
            cache_key({}, VictimConfig(), 0, net, {"precision": "bf16-mixed"}),
            cache_key({}, VictimConfig(), 0, net, {"accumulate_grad_batches": 4})}
    assert len(keys) == 4
    # where the weights live and hardware choices do not change the key
    assert cache_key({}, VictimConfig(cache_dir="/x", checkpoint=None), 0, net, {"accelerator": "gpu"}) == \
        cache_key({}, VictimConfig(), 0, net)


def test_damaged_cache_entry_fails_its_checksum_and_is_retrained(tmp_path, capsys, one_thread):
    first = _obtain(tmp_path)
    path = Path(first.path)
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF  # a flipped byte, in an otherwise intact file
    path.write_bytes(bytes(data))
    again = _obtain(tmp_path)
    assert again.origin == "trained" and "fails its checksum" in capsys.readouterr().out
    assert _obtain(tmp_path).origin == "cache"  # the entry was replaced by a good one


def test_cache_entry_that_is_a_folder(tmp_path, capsys, one_thread):
    first = _obtain(tmp_path)
    path = Path(first.path)
    path.unlink()
    path.mkdir()
    again = _obtain(tmp_path)
    assert again.origin == "trained" and "is a folder" in capsys.readouterr().out and path.is_dir()


def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "cache").write_text("x")
    with pytest.raises(ConfigError, match="--victim.cache_dir .* is a file"):
        _obtain(tmp_path)


def test_diverged_victim_is_named_not_the_defense(tmp_path, one_thread):
    with pytest.raises(StealbenchError, match=r"victim training diverged \(NaN/inf weights.*lower --victim.lr"):
        _obtain(tmp_path, lr=1e37)
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_near_chance_victim_is_flagged_and_not_cached(tmp_path, capsys, one_thread):
    result = _obtain(tmp_path, {"limit_train_batches": 1.0}, check_shift=1)
    assert result.near_chance and result.check_acc < 0.375 and "near chance" in result.not_cached
    assert "near chance" in capsys.readouterr().out
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_fit_with_diverging_victim_says_so(tmp_path):
    proc = _fit(["--data", "digits", *FAST, "--victim.lr", "1e38", "--victim.epochs", "1", "--output_dir",
                 str(tmp_path), "--name", "r"], timeout=240)
    _assert_clean_failure(proc, 2, "victim training diverged", "--victim.lr")
    assert "defense" not in (proc.stdout + proc.stderr).split("victim training diverged")[1].split("\n")[0]
    assert not (tmp_path / "r" / "results.json").exists()


# -------------------------------------------------------------------------------------------------- data

def test_truncated_mnist_file_is_named_as_damaged(tmp_path, shared_data):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "MNIST" / "raw").iterdir():
        shutil.copyfile(f, raw / f.name)
    with open(raw / "train-labels-idx1-ubyte", "r+b") as handle:
        handle.truncate(30000)
    proc = _fit(["--data", "mnist", "--data.root", str(tmp_path / "data"), *FAST, "--output_dir",
                 str(tmp_path / "runs"), "--name", "r"], timeout=240)
    _assert_clean_failure(proc, 2, "damaged", "train-labels-idx1-ubyte", "30000 bytes")
    assert "not found" not in proc.stderr


def test_labels_out_of_range_are_a_clear_error():
    from stealbench.data.base import ImageDataset

    class Bad(ImageDataset):
        num_classes, input_shape, mean, std = 3, (1, 2, 2), (0.5,), (0.5,)

        def load(self):
            x = torch.rand(20, 1, 2, 2)
            return x, torch.arange(20) % 4, x, torch.arange(20) % 3

    with pytest.raises(ConfigError, match=r"labels lie outside \[0, 3\)"):
        Bad().splits()


# ------------------------------------------------------------------------------------------ devices and W&B

def test_accelerator_gpu_without_gpu(monkeypatch):
    from stealbench.devices import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"no CUDA GPU is visible \(torch.cuda.is_available\(\) is False\)"):
        check_accelerator({"accelerator": "gpu"})
    check_accelerator({"accelerator": "cpu"})
    check_accelerator({"accelerator": "auto"})


@needs_integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_fit_with_accelerator_gpu_without_gpu(tmp_path):
    proc = _fit(["--data", "digits", *FAST, "--trainer.accelerator", "gpu", "--output_dir", str(tmp_path),
                 "--name", "r"], timeout=120)
    _assert_clean_failure(proc, 2, "no CUDA GPU is visible", "--trainer.accelerator")
    assert not (tmp_path / "r" / "results.json").exists()


def test_wandb_online_without_login_is_a_clear_error(tmp_path, monkeypatch):
    from stealbench.tracking import Tracker

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match="run `wandb login` or use --wandb.mode offline"):
        Tracker(WandbConfig(mode="online"), tmp_path, "r", {})


def test_wandb_auto_falls_back_to_offline_when_the_server_is_unreachable(tmp_path, monkeypatch, capsys):
    from stealbench.tracking import Tracker

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed local port: no traffic leaves
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    import wandb

    wandb.teardown()  # wandb keeps its settings (the server address) from an earlier run in this process
    try:
        t0 = time.perf_counter()
        tracker = Tracker(WandbConfig(mode="auto"), tmp_path, "r", {"a": 1})
        assert time.perf_counter() - t0 < 30
        assert tracker.mode == "offline"
        assert capsys.readouterr().out.count("logging offline instead") == 1
        assert "wandb sync" in tracker.finish({"m": 1.0})
        assert list(tmp_path.glob("wandb/offline-run-*"))
    finally:
        wandb.teardown()
