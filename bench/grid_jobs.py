"""What `stealbench grid --jobs N` buys: wall time of one 16-run digits grid with --jobs 1 and with --jobs N,
each from an empty output folder and an empty victim cache (so each trains its victims once), in alternating
order, and the ratio per pair.

    python bench/grid_jobs.py --jobs 2 --pairs 1

The grid: digits, none and the reverse sigmoid (beta 1, gamma 0.2), JBDA 2 rounds x 3 epochs (budget 200) and
natural samples (budget 200), soft and hard labels, seeds 0 and 1: 2 x 2 x 2 x 2 = 16 runs, 2 victims.
`--jobs 1` runs them one after another in one process; `--jobs N` runs N at a time, each its own `stealbench
fit` with cores / N threads. A noisy neighbour slows both sides alike only when the pairs alternate.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GRID = {
    "name": "jobs_bench",
    "common": {"victim": {"epochs": 3}, "progress_bar": False},
    "data": ["digits"],
    "defenses": ["none", {"name": "deceptive", "label": "rs-b1-g0.2", "beta": 1.0, "gamma": 0.2}],
    "attacks": [{"name": "jbda", "rounds": 2, "epochs_per_round": 3}, {"name": "random", "epochs": 3}],
    "label_modes": ["soft", "hard"],
    "budgets": [200],
    "seeds": [0, 1],
}


def run(jobs: int, root: Path) -> float:
    root.mkdir(parents=True)
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, "output_dir": str(root / "runs")}))
    # --jobs 1 gets torch's default threads (every core); --jobs N sets cores / N in each child
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", STEALBENCH_CACHE_DIR=str(root / "cache"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stealbench", "grid", str(path), "--jobs", str(jobs)], env=env,
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"grid --jobs {jobs} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    complete = len(list((root / "runs").glob("*/results.json")))
    if complete != 16:
        raise SystemExit(f"grid --jobs {jobs} completed {complete} of 16 runs")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="the parallel side (default 2)")
    parser.add_argument("--pairs", type=int, default=1, help="timed (1, N) pairs (default 1)")
    args = parser.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}; 16-run digits grid, empty output and victim cache each time")
    with tempfile.TemporaryDirectory(prefix="grid-jobs-") as tmp:
        for pair in range(args.pairs):
            order = (1, args.jobs) if pair % 2 == 0 else (args.jobs, 1)
            times = {jobs: run(jobs, Path(tmp) / f"p{pair}-j{jobs}") for jobs in order}
            print(f"pair {pair + 1}: --jobs 1 {times[1]:.1f} s, --jobs {args.jobs} {times[args.jobs]:.1f} s, "
                  f"ratio {times[1] / times[args.jobs]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
