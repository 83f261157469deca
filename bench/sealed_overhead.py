"""What sealing the attacker in its own process costs: wall time of the same `stealbench fit`, sealed (this
checkout) vs in-process (a checkout of the code before the split), run alternately, side by side.

    git worktree add /tmp/stealbench-inprocess 95c1e6a      # the last in-process commit
    python bench/sealed_overhead.py --old /tmp/stealbench-inprocess --repeats 3

Each command runs once first to train and cache its victim (not timed); then the two versions alternate, so a
noisy neighbour slows both alike. The ratio of medians is the overhead. The two versions draw different random
numbers (role seeds; the defender holdout split changes the victim's training set), but do the same work: the
same budget, rounds, epochs and network sizes.
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
CASES = {
    "quickstart": ["--defense", "deceptive", "--attack", "jbda"],
    "mnist-jbda": ["--data", "mnist", "--data.root", str(REPO.parent / "shared" / "data"), "--victim.epochs", "1",
                   "--victim.arch", "lenet5", "--defense", "deceptive", "--attack", "jbda",
                   "--attack.epochs_per_round", "3"],
}


def run(code: Path, args: list[str], out: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "disabled", "STEALBENCH_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stealbench.cli", "fit", *args, "--output_dir", str(out),
                    "--progress_bar", "false"], env=env, check=True, cwd=code, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="checkout of the in-process code")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    versions = {"in-process": args.old.resolve(), "sealed": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"{'case':<12} {'in-process s':>14} {'sealed s':>10} {'ratio':>7}   (median of {args.repeats}, "
              "alternating)")
        for case in args.cases:
            times: dict[str, list[float]] = {name: [] for name in versions}
            for name, code in versions.items():  # warm-up: train and cache the victim
                run(code, CASES[case], tmp / "out", tmp / f"cache-{name}")
            for _ in range(args.repeats):
                for name, code in versions.items():
                    times[name].append(run(code, CASES[case], tmp / "out", tmp / f"cache-{name}"))
            old, new = (statistics.median(times[n]) for n in versions)
            print(f"{case:<12} {old:>14.1f} {new:>10.1f} {new / old:>7.3f}   all: "
                  + "; ".join(f"{n} {', '.join(f'{t:.1f}' for t in ts)}" for n, ts in times.items()), flush=True)


if __name__ == "__main__":
    main()
