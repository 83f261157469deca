"""Issue 18 benchmark: DFME and MAZE budget curves on MNIST, beside the model-extraction-benchmark's DFME figures.

One `stealbench fit` per (attack, budget): each budget is its own game, since the papers' learning-rate schedules
are fractions of the run (DFME's x0.3 steps at 10%, 30%, 50% of the iterations); `--one_run` instead runs the
largest budget once, checkpointed at the others. Finished runs (their results.json) are reused when rerun. Prints
a markdown table (wall s: the runs' wall time in all; queries: the largest run's breakdown).

    python bench/data_free.py --root ../shared/data --output_dir bench/out/data_free            # 10k/50k/100k
    python bench/data_free.py --data digits --budgets 2000,4000 --output_dir /tmp/df_tiny        # a smoke run

The published column is the model-extraction-benchmark's MNIST DFME (0.634 at 10k queries, 0.834 at 50k, 0.893
at 100k); its victim and surrogate architectures and training need not match ours (`--victim_arch`,
`--surrogate_arch`), so the comparison is of orders, not digits. Batches are scaled down from the papers' (DFME
256, MAZE 128 with 10 directions: about 1.4k queries per MAZE iteration) with `--batch_size` so that a 10k-query
point holds several iterations; the papers' learning rates and schedules are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from stealbench.analysis import stats

#: the model-extraction-benchmark's MNIST DFME accuracies, by query budget
PUBLISHED_DFME = {10_000: 0.634, 50_000: 0.834, 100_000: 0.893}
#: and its MAZE (reports/MASTER_SUMMARY.md, SET-A1: lenet victim and substitute, soft probabilities)
PUBLISHED_MAZE = {10_000: 0.340, 20_000: 0.400, 50_000: 0.500, 100_000: 0.425}


#: row name -> attack options: the two attacks, and DFME's ablation (its generator never trained: the student
#: learns from a random generator's images; what the generator's game adds is the gap to the dfme row)
VARIANTS: dict[str, list[str]] = {
    "dfme": ["--attack", "dfme"],
    "maze": ["--attack", "maze"],
    "dfme-fixed-generator": ["--attack", "dfme", "--attack.update_generator", "false"],
    "dfms-hl": ["--attack", "dfms-hl", "--label_mode", "hard"],
    # the model-extraction-benchmark's protocol ("Track A"): a fresh surrogate trained from scratch on every image
    # the game sent, its published figures' kind of number
    "dfme-retrain": ["--attack", "dfme", "--attack.evaluate", "retrain"],
    "maze-retrain": ["--attack", "maze", "--attack.evaluate", "retrain"],
    # the control of the Track A rows: the same retraining on the images of a generator that never trains
    "dfme-fixed-generator-retrain": ["--attack", "dfme", "--attack.update_generator", "false",
                                     "--attack.evaluate", "retrain"],
    # the control: a pool-based attack, whose queries are natural images (an 8-bit channel barely moves them)
    "jbda": ["--attack", "jbda"],
}
#: the variants whose batch is scaled by --batch_size (the others keep their papers' batches)
BATCHED = {"dfme", "maze", "dfme-fixed-generator", "dfme-retrain", "maze-retrain", "dfme-fixed-generator-retrain"}
#: the variants with a curve of their own making (JBDA's rounds decide its queries: the budget is only a cap)
OWN_CURVE = {"jbda"}


def run(out: Path, name: str, options: list[str], common: list[str], report_only: bool = False
        ) -> tuple[dict | None, float]:
    result_file = out / name / "results.json"
    started = time.perf_counter()
    if not result_file.exists() and report_only:
        return None, 0.0
    if not result_file.exists():
        cmd = [sys.executable, "-m", "stealbench", "fit", *options, *common, "--output_dir", str(out),
               "--name", name]
        print("$", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return None, time.perf_counter() - started
    results = json.loads(result_file.read_text())
    return results, float(results.get("wall_seconds", time.perf_counter() - started))


def at(curve: list[dict], budget: int) -> float | None:
    """The surrogate's accuracy at the first checkpoint at or past `budget` queries."""
    points = [p for p in curve if p["queries"] >= budget]
    return points[0]["surrogate/acc"] if points else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--root", default="../shared/data", help="--data.root (ignored for digits)")
    parser.add_argument("--budgets", default="10000,50000,100000", help="comma-separated query counts")
    parser.add_argument("--attacks", default="dfme,maze,dfme-fixed-generator",
                        help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--batch_size", type=int, default=64, help="--attack.batch_size of both attacks")
    parser.add_argument("--victim_arch", default="lenet5")
    parser.add_argument("--surrogate_arch", default="lenet5")
    parser.add_argument("--victim_epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (their mean, std and 95%% t-interval); "
                                                      "default: --seed alone")
    parser.add_argument("--defense", default="none", help="--defense of every run (with its --defense.* below)")
    parser.add_argument("--defense_options", default="", help="extra options, e.g. '--defense.beta 0.5'")
    parser.add_argument("--quantize", type=int, default=None,
                        help="--oracle.quantize: the channel's bits per pixel (8: a real image API)")
    parser.add_argument("--output_dir", default="bench/out/data_free")
    parser.add_argument("--plot", default=None, help="save the curves (accuracy against queries, log axis) here")
    parser.add_argument("--report_only", action="store_true", help="start no run: tabulate the finished ones")
    parser.add_argument("--one_run", action="store_true",
                        help="one run at the largest budget, checkpointed at the others (a warm-started curve)")
    args = parser.parse_args()

    budgets = sorted(int(b) for b in args.budgets.split(","))
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    out = Path(args.output_dir)
    tag = ("" if args.defense == "none" else f"_{args.defense}{''.join(args.defense_options.split()[1::2])}") + (
        "" if args.quantize is None else f"_q{args.quantize}")
    rows = []
    for attack in args.attacks.split(","):
        if attack not in VARIANTS:
            parser.error(f"--attacks: unknown {attack!r} (known: {', '.join(VARIANTS)})")
        per_seed, victims, seconds, queries = [], [], 0.0, {}
        for seed in seeds:
            accs, victim, took, breakdown = curve_of(attack, seed, budgets, out, tag, args)
            queries = breakdown or queries  # the last seed's that ran
            per_seed.append(accs)
            victims.append(victim)
            seconds += took
        rows.append((attack, [summary([a[i] for a in per_seed]) for i in range(len(budgets))],
                     summary(victims), seconds, queries))
    print(f"\n{args.data}, victim {args.victim_arch}, surrogate {args.surrogate_arch}, seeds "
          f"{','.join(map(str, seeds))}, batch {args.batch_size}, defense {args.defense} {args.defense_options}, "
          f"channel {'exact float' if args.quantize is None else f'{args.quantize}-bit'}; mean ± std "
          f"[95% t-interval] over seeds\n")
    print("| attack | " + " | ".join(f"{b:,} queries" for b in budgets) + " | benign acc | wall s, all runs | queries |")
    print("|---" * (len(budgets) + 4) + "|")
    for attack, accs, victim, seconds, queries in rows:
        split = ", ".join(f"{k.split('/')[-1]} {int(v)}" for k, v in queries.items())
        print(f"| {attack} | " + " | ".join(map(show, accs)) + f" | {show(victim, interval=False)} | "
              f"{seconds:.0f} | {split} |")
    if args.data == "mnist":
        for name, published in (("DFME", PUBLISHED_DFME), ("MAZE", PUBLISHED_MAZE)):
            print(f"| {name}, model-extraction-benchmark | "
                  + " | ".join(show(summary([published.get(b)])) for b in budgets) + " | | | |")
    if args.plot:
        plot(Path(args.plot), budgets, [(r[0], [None if v is None else stats.mean(v) for v in r[1]]) for r in rows],
             args)
    return 0 if all(r[1][-1] is not None for r in rows) else 1


def curve_of(attack: str, seed: int, budgets: list[int], out: Path, tag: str, args):
    """One seed's (accuracy at each budget or None, benign acc as defended, wall s, the largest run's query
    breakdown)."""
    common = ["--data", args.data, "--victim.arch", args.victim_arch, "--surrogate.arch", args.surrogate_arch,
              "--victim.epochs", str(args.victim_epochs), "--seed", str(seed), "--progress_bar", "false",
              "--defense", args.defense, *args.defense_options.split()]
    if args.quantize is not None:
        common += ["--oracle.quantize", str(args.quantize)]
    if args.data != "digits":
        common += ["--data.root", args.root]
    options = [*VARIANTS[attack], *(["--attack.batch_size", str(args.batch_size)] if attack in BATCHED else [])]
    # each budget its own game (the papers' schedules are fractions of the run), or one run checkpointed
    plan = [(budgets[-1], ["--attack.checkpoints", json.dumps(budgets)])] if args.one_run else [
        (b, ["--attack.num_checkpoints", "1"]) for b in budgets]
    if attack in OWN_CURVE:  # one run, its last point read at every budget it reaches
        plan = [(budgets[-1], [])]
    accs, victim, seconds, queries = {}, None, 0.0, {}
    for budget, extra in plan:
        name = f"{args.data}_{attack}{tag}_b{budget}_s{seed}{'_curve' if args.one_run else ''}"
        results, took = run(out, name, [*options, *extra, "--budget", str(budget)], common, args.report_only)
        seconds += took
        if results is None:
            continue
        victim = results["metrics"]["victim/acc_defended"]  # benign users' accuracy as the defense answers them
        queries = {k: v for k, v in results["extra_metrics"].items() if k.startswith("attack/queries/")}
        cpu = (results.get("attacker_compute") or {}).get("cpu_seconds")
        if cpu is not None:
            queries["attacker CPU s"] = cpu  # the largest run's (older runs did not record it)
        for b in budgets:
            if attack in OWN_CURVE:
                accs[b] = results["curve"][-1]["surrogate/acc"] if results["metrics"]["queries"] <= b else None
            elif b <= budget and (args.one_run or b == budget):
                accs[b] = at(results["curve"], b)
    return [accs.get(b) for b in budgets], victim, seconds, queries


def summary(values: list[float | None]) -> list[float] | None:
    """The values present (one per seed), or None if none is."""
    xs = [v for v in values if v is not None]
    return xs or None


def show(values: list[float] | None, interval: bool = True) -> str:
    """mean ± std [95% t-interval] over seeds (stealbench.analysis.stats, as the verdicts use); a lone value."""
    if values is None:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    text = f"{stats.mean(values):.3f} ± {stats.sd(values):.3f}"
    return text + (f" {stats.t_interval(values).fmt()}" if interval else "")


def plot(path: Path, budgets: list[int], rows: list, args) -> None:
    """Each row's accuracy against its budget (log axis), the published figures as open markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for attack, accs in rows:
        points = [(b, a) for b, a in zip(budgets, accs) if a is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=attack)
    if args.data == "mnist":
        for name, published in (("DFME", PUBLISHED_DFME), ("MAZE", PUBLISHED_MAZE)):
            ax.plot(list(published), list(published.values()), linestyle=":", marker="s", fillstyle="none",
                    label=f"{name}, model-extraction-benchmark")
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("surrogate accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{args.data}: data-free attacks (mean over seeds), defense {args.defense}")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
