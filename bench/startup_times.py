"""Wall times of the answers that should not wait for the training stack, and of a run's start-up.

usage: python bench/startup_times.py [--repeat 3] [--src DIR ...]
Each command runs --repeat times per source tree (PYTHONPATH=DIR; default: this checkout); medians are printed.
`fit --help` and the mistyped option are timed after one untimed `fit --help` has stored the parser's answers
(stealbench/fit_quick.py) in a fresh STEALBENCH_CACHE_DIR. "run start-up" is the time until a small digits run
prints its plan, just before the victim phase.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import torch": ["-c", "import torch"],
    "stealbench --help": ["-m", "stealbench", "--help"],
    "stealbench fit --help": ["-m", "stealbench", "fit", "--help"],
    "fit ... --no_such_option 1": ["-m", "stealbench", "fit", "--defense", "deceptive", "--attack", "jbda",
                                   "--no_such_option", "1"],
    "stealbench grid --help": ["-m", "stealbench", "grid", "--help"],
}
RUN = ["-m", "stealbench", "fit", "--victim.epochs", "1", "--budget", "100", "--progress_bar", "false",
       "--victim.cache", "false"]


def wall(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    # cwd: the temporary folder, so that `-m stealbench` imports the tree on PYTHONPATH, not the current folder's
    subprocess.run([sys.executable, *args], env=env, cwd=Path(env["STEALBENCH_CACHE_DIR"]).parent,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def until_plan(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=Path(env["STEALBENCH_CACHE_DIR"]).parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = float("nan")
    for line in proc.stdout:
        if "victim" in line and "epochs" in line:  # the plan's victim line (runner.py, console.header)
            seconds = time.perf_counter() - start
            break
    proc.terminate()
    proc.wait()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--src", action="append", default=None, help="source tree(s) to time (default: REPO)")
    args = parser.parse_args()
    for src in args.src or [str(REPO)]:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": src, "STEALBENCH_CACHE_DIR": str(Path(tmp) / "cache"),
                   "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
            wall(COMMANDS["stealbench fit --help"], env)  # stores the answers (a no-op for trees without them)
            for label, command in COMMANDS.items():
                times = [wall(command, env) for _ in range(args.repeat)]
                print(f"{src}  {label:<28} median {statistics.median(times):6.2f} s  "
                      f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
            times = [until_plan([*RUN, "--output_dir", str(Path(tmp) / f"runs{i}")], env)
                     for i in range(args.repeat)]
            print(f"{src}  {'run start-up (to the plan)':<28} median {statistics.median(times):6.2f} s  "
                  f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)


if __name__ == "__main__":
    main()
