"""The attacker's side in an operating-system sandbox (issue 22): what a hostile attack plugin can reach with
`--sandbox bwrap` (nothing of the run's) and with `--sandbox off` (the positive control: the probes work), the
`sealed` record, and the same numbers either way."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from adversaries import EscapingAttack, UnpicklableHere
from stealbench import console
from stealbench.attacker import sandbox
from stealbench.cli import main
from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
from stealbench.data.digits import Digits
from stealbench.defenses.none import NoDefense
from stealbench.errors import ConfigError, StealbenchError
from stealbench.runner import Experiment, run_experiment

needs_bwrap = pytest.mark.skipif(sandbox.bwrap_problem() is not None,
                                 reason=f"no OS sandbox here: {sandbox.bwrap_problem()} "
                                        "(apt-get install bubblewrap)")
SECRET = "wandb-secret-0123456789abcdef"


@pytest.fixture
def outside_tmp():
    """A folder outside /tmp (which the sandbox hides whole): the run's own folders must be hidden by name."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else str(Path.home())
    folder = Path(tempfile.mkdtemp(prefix="stealbench-sandbox-test-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def listener():
    """A TCP server on the host's 127.0.0.1; records every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0].recv(100))
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def _escape(folder: Path, port: int, mode: str) -> tuple[dict, dict, str]:
    marker = f"{40 + random.randint(0, 9)}.{random.randint(10**8, 10**9)}"
    cache, out = folder / "cache", folder / "runs"
    attack = EscapingAttack(cache_dir=str(cache), output_dir=str(out), defender_pid=os.getpid(), port=port,
                            marker=marker, secret=SECRET)
    exp = Experiment(data=Digits(), defense=NoDefense(), attack=attack,
                     keys={"data": "digits", "defense": "none", "attack": "escape"}, budget=80,
                     victim=VictimConfig(epochs=3, cache_dir=str(cache)), surrogate=SurrogateConfig(),
                     wandb=WandbConfig(mode="disabled"), trainer={"accelerator": "cpu"}, output_dir=str(out),
                     name=mode, sandbox=mode)
    said: list[str] = []
    with pytest.MonkeyPatch.context() as patch:  # the console wraps long lines: take the messages themselves
        patch.setattr(console, "info", said.append)
        patch.setattr(console, "attack_line", said.append)  # the attack's own lines
        results = run_experiment(exp)
    line = next(m for m in said if m.startswith("ESCAPE "))
    return results, json.loads(line.removeprefix("ESCAPE ")), marker


@needs_bwrap
def test_a_sandboxed_attack_reaches_nothing_of_the_run(outside_tmp, listener, monkeypatch, one_thread):
    port, accepted = listener
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    results, found, marker = _escape(outside_tmp, port, "bwrap")
    assert results["sealed"] == "os-sandbox"
    assert (outside_tmp / "cache" / "victims").is_dir() and (outside_tmp / "cache" / "key").exists()
    assert found["cache_files_read"] == []  # (a) the cache folder is an empty tmpfs: no victim, no seal key
    assert found["proc_pids"] == [1, 2] or max(found["proc_pids"]) < 10  # (b) its own PID namespace only
    assert found["ppid"] != os.getpid() and found["proc_secret_leaks"] == []
    assert found["env_secret"] == [] and found["env_wandb"] == []  # (c) a whitelisted environment
    assert found["wrote_output_dir"] is not True and not (outside_tmp / "runs" / "pwned.txt").exists()  # (d)
    assert found["network"] is not True and accepted == []  # (e) no network: the host's loopback is unreachable
    assert _processes_with(f"sleep {marker}") == []  # (f) the daemon ended with the sandbox


def test_without_the_sandbox_the_same_probes_do_reach_the_run(outside_tmp, listener, monkeypatch, one_thread):
    """Positive control: the probes above are real; sealed in memory only, the attack reads files and /proc."""
    port, accepted = listener
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    results, found, marker = _escape(outside_tmp, port, "off")
    try:
        assert results["sealed"] == "memory-only"
        assert "key" in found["cache_files_read"]
        # the defender's /proc is in reach (whether its environ shows the key depends on when each process was
        # started: /proc/PID/environ holds the environment a process began with, not later os.environ changes)
        assert os.getpid() in found["proc_pids"]
        assert found["env_wandb"] == []  # its own environment has no W&B variables even so
        assert found["network"] is True
    finally:
        for pid in _processes_with(f"sleep {marker}"):  # the daemon outlived the run: end it
            os.kill(pid, 9)


def _fit(tmp_path: Path, name: str, mode: str) -> dict:
    code = main(["fit", "--data", "digits", "--victim.epochs", "3", "--attack.rounds", "2",
                 "--attack.epochs_per_round", "1", "--budget", "100", "--progress_bar", "false",
                 "--output_dir", str(tmp_path), "--name", name, "--sandbox", mode])
    assert code == 0
    return json.loads((tmp_path / name / "results.json").read_text())


@needs_bwrap
def test_an_honest_run_gives_the_same_numbers_in_and_out_of_the_sandbox(tmp_path, one_thread):
    sealed, plain = _fit(tmp_path, "bwrap", "bwrap"), _fit(tmp_path, "off", "off")
    assert sealed["sealed"] == "os-sandbox" and plain["sealed"] == "memory-only"
    assert sealed["curve"] == plain["curve"] and sealed["metrics"] == plain["metrics"]
    assert sealed["seed_set"] == plain["seed_set"]


def test_sandbox_modes_without_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bwrap_problem.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"--sandbox bwrap: bubblewrap \(bwrap\) is not installed; install "
                                              r"bubblewrap \(`apt-get install bubblewrap`\) or run with "):
            sandbox.resolve("bwrap")
        notices: list[str] = []
        assert sandbox.resolve("auto", notices.append) == "off"
        assert len(notices) == 1 and "memory-only" in notices[0]
        assert sandbox.resolve("off") == "off"
    finally:
        sandbox.bwrap_problem.cache_clear()


def test_the_sandbox_environment_is_a_whitelist():
    env = sandbox.sandbox_env({"PATH": "/bin", "WANDB_API_KEY": SECRET, "STEALBENCH_CACHE_DIR": "/c",
                               "OMP_NUM_THREADS": "1", "AWS_SECRET_ACCESS_KEY": "x", "HOME": "/root"})
    assert env["PATH"] == "/bin" and env["OMP_NUM_THREADS"] == "1" and env["HOME"] == env["TMPDIR"] == "/tmp"
    assert not {"WANDB_API_KEY", "STEALBENCH_CACHE_DIR", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert SECRET not in json.dumps(env)


def test_hidden_folders_are_read_only_tmpfs_and_code_inside_them_stays_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/bwrap")
    secret, code = tmp_path / "secret", tmp_path / "secret" / "code"
    code.mkdir(parents=True)
    args = sandbox.bwrap_command([secret], [code], 5, "cpu")
    i, j = args.index(str(secret)), args.index(str(code))
    assert args[i - 1] == "--tmpfs" and args[j - 1:j + 2] == ["--ro-bind", str(code), str(code)] and i < j
    assert any(args[n:n + 2] == ["--remount-ro", str(secret)] for n in range(j, len(args)))  # after the re-bind
    assert "--clearenv" in args and "--unshare-all" in args and "--die-with-parent" in args
    assert args[-2:] == ["--fd", "5"]


def test_grid_passes_the_sandbox_option_on(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("data: [digits]\ndefenses: [none]\nattacks: [random]\nbudgets: [50]\n")
    assert main(["grid", str(grid), "--dry_run", "--sandbox", "off"]) == 0
    assert capsys.readouterr().out.count("--sandbox off") == 1


def test_bad_sandbox_value_is_one_line(capsys):
    assert main(["fit", "--sandbox", "jail"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--sandbox" in err and "auto, bwrap, off" in err


@needs_bwrap
def test_an_attack_that_cannot_be_rebuilt_in_the_sandbox_fails_in_one_line(tmp_path, one_thread):
    exp = Experiment(data=Digits(), defense=NoDefense(), attack=UnpicklableHere(),
                     keys={"data": "digits", "defense": "none", "attack": "unpicklable"}, budget=20,
                     victim=VictimConfig(epochs=1), surrogate=SurrogateConfig(), wandb=WandbConfig(mode="disabled"),
                     trainer={"accelerator": "cpu"}, output_dir=str(tmp_path), name="r", sandbox="bwrap")
    with pytest.raises(StealbenchError, match="attack .unpicklable. raised RuntimeError: this attack cannot be rebuilt"):
        run_experiment(exp)
    assert "Traceback" in (tmp_path / "r" / "error.txt").read_text()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += children - found
            found |= children
    return found


@needs_bwrap
def test_stop_ends_a_waiting_sandbox_and_everything_in_it():
    from stealbench.attacker.launch import start_sandbox
    from stealbench.defender.referee import stop

    process, conn = start_sandbox([], "cpu")
    time.sleep(1)
    inside = _descendants(process.pid)
    assert process.is_alive() and inside  # bwrap's init and the attacker's interpreter
    stop(process, conn, timeout=0.5)  # still importing torch: terminate goes to bwrap's process group
    assert not process.is_alive()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in inside) and time.monotonic() < deadline:
        time.sleep(0.1)  # they die with bwrap (--die-with-parent), a moment later
    assert not [p for p in inside if Path(f"/proc/{p}").exists()]
