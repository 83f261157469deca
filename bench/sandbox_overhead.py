"""What the OS sandbox costs: wall time of the same small `stealbench fit` with `--sandbox bwrap` and with
`--sandbox off`, run in alternating pairs, and the median of the per-pair ratios.

    python bench/sandbox_overhead.py --pairs 3

One untimed run first trains and caches the victim, so the timed runs differ only in how the attacker starts:
a fresh interpreter inside bubblewrap (imports torch and Lightning itself, overlapping the defender's victim
phase) against a fork of the preloaded fork server. Alternating pairs put a noisy neighbour on both sides alike.
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
FIT = ["--data", "digits", "--defense", "deceptive", "--attack", "jbda", "--victim.epochs", "3",
       "--attack.rounds", "2", "--attack.epochs_per_round", "2", "--budget", "200", "--progress_bar", "false"]


def run(mode: str, out: Path, cache: Path, name: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "STEALBENCH_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stealbench", "fit", *FIT, "--sandbox", mode, "--output_dir", str(out),
                    "--name", name], env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="timed (bwrap, off) pairs (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandbox-overhead-") as tmp:
        out, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        run("off", out, cache, "warmup")  # trains and caches the victim: not timed
        pairs = []
        for i in range(args.pairs):
            pairs.append((run("bwrap", out, cache, f"bwrap{i}"), run("off", out, cache, f"off{i}")))
            print(f"pair {i + 1}: bwrap {pairs[-1][0]:.1f}s, off {pairs[-1][1]:.1f}s, "
                  f"ratio {pairs[-1][0] / pairs[-1][1]:.2f}", flush=True)
    ratio = statistics.median(b / o for b, o in pairs)
    bwrap, off = statistics.median(b for b, _ in pairs), statistics.median(o for _, o in pairs)
    print(f"median bwrap {bwrap:.1f}s, off {off:.1f}s, median ratio {ratio:.2f} ({len(pairs)} pairs; "
          f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
