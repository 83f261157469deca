"""Issue 4 benchmark: each attack of the catalogue against none, deceptive and misinformation on MNIST.

Runs `stealbench fit` once per (attack, defense) cell, reuses finished cells (their results.json) when rerun,
and prints a markdown table of surrogate accuracy (plus the victim's defended accuracy, i.e. benign utility).

    python bench/catalog_table.py --root ../shared/data --budget 1000 --output_dir bench/out/catalog

Settings are deliberately modest (CPU): victim 2 epochs, LeNet-5 victim and surrogate, 5 surrogate epochs per
training round, misinformation models trained 1 epoch on 5,000 images (outliers: Fashion-MNIST's test part, never
the attacker's pool). Defaults of the components are not tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ATTACKS: dict[str, list[str]] = {
    "jbda": ["--attack", "jbda", "--attack.rounds", "5", "--attack.epochs_per_round", "5"],
    "jbda-topk (k=3)": ["--attack", "jbda-topk", "--attack.k", "3", "--attack.rounds", "3",
                        "--attack.epochs_per_round", "5"],
    "t-rnd": ["--attack", "t-rnd", "--attack.rounds", "5", "--attack.epochs_per_round", "5"],
    "random (natural)": ["--attack", "random", "--attack.num_checkpoints", "3", "--attack.epochs", "5"],
    "knockoff adaptive": ["--attack", "knockoff", "--attack.policy", "adaptive", "--attack.num_checkpoints", "3",
                          "--attack.epochs", "5"],
    "random, Fashion-MNIST pool": ["--attack", "random", "--attack.num_checkpoints", "3", "--attack.epochs", "5",
                                   "--pool_data", "fashion-mnist", "--pool_data.root", "{root}"],
    "knockoff adaptive, Fashion-MNIST pool": ["--attack", "knockoff", "--attack.policy", "adaptive",
                                              "--attack.num_checkpoints", "3", "--attack.epochs", "5",
                                              "--pool_data", "fashion-mnist", "--pool_data.root", "{root}"],
    "activethief k-center": ["--attack", "activethief", "--attack.strategy", "kcenter", "--attack.rounds", "3",
                             "--attack.epochs", "5"],
    "activethief unc+k-center": ["--attack", "activethief", "--attack.strategy", "uncertainty-kcenter",
                                 "--attack.rounds", "3", "--attack.epochs", "5"],
}
DEFENSES: dict[str, list[str]] = {
    "none": ["--defense", "none"],
    "deceptive": ["--defense", "deceptive", "--defense.beta", "1.0", "--defense.gamma", "0.1"],
    # outliers from Fashion-MNIST's test part: its training part is the attacker's pool in the Fashion-MNIST cells
    "misinformation": ["--defense", "misinformation", "--defense.epochs", "1", "--defense.train_size", "5000",
                       "--defense.outlier_part", "test"],
}


#: defense-aware label modes: (row name, attack options, defense options, label-mode options)
LABEL_MODE_CELLS: list[tuple[str, list[str], list[str], list[str]]] = [
    ("jbda vs none, soft", ATTACKS["jbda"], DEFENSES["none"], []),
    ("jbda vs deceptive, soft", ATTACKS["jbda"], DEFENSES["deceptive"], []),
    ("jbda vs deceptive, hard", ATTACKS["jbda"], DEFENSES["deceptive"], ["--label_mode", "hard"]),
    ("jbda vs deceptive, invert (known beta/gamma)", ATTACKS["jbda"], DEFENSES["deceptive"],
     ["--label_mode", "invert", "--label_options.beta", "1.0", "--label_options.gamma", "0.1"]),
    ("jbda vs deceptive, invert (estimated)", ATTACKS["jbda"], DEFENSES["deceptive"], ["--label_mode", "invert"]),
    ("random vs none, soft", ATTACKS["random (natural)"], DEFENSES["none"], []),
    ("random vs noise eps=3, soft", ATTACKS["random (natural)"], ["--defense", "noise", "--defense.eps", "3.0"], []),
    ("random vs noise eps=3, smooth x4", ATTACKS["random (natural)"], ["--defense", "noise", "--defense.eps", "3.0"],
     ["--label_mode", "smooth", "--label_options.samples", "4"]),
]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/catalog")
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS))
    parser.add_argument("--defenses", nargs="*", default=list(DEFENSES))
    parser.add_argument("--table", default=None, help="also write the markdown table to this file")
    parser.add_argument("--label-modes", action="store_true",
                        help="run the defense-aware label-mode cells (LABEL_MODE_CELLS) instead of the main table")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--data", "mnist", "--data.root", args.root, "--victim.arch", "lenet5", "--victim.epochs", "2",
              "--surrogate.arch", "lenet5", "--budget", str(args.budget), "--seed", str(args.seed),
              "--progress_bar", "false", "--wandb.mode", "disabled", "--output_dir", str(out)]
    if args.label_modes:
        return label_mode_table(args, out, common)
    cells: dict[tuple[str, str], dict] = {}
    for attack in args.attacks:
        for defense in args.defenses:
            result = run_cell(out, f"{slug(attack)}__{defense}", [*ATTACKS[attack], *DEFENSES[defense]], common,
                              args.root)
            if result is None:
                continue
            cells[(attack, defense)] = result
            print_table(args, cells)
    table = print_table(args, cells)
    if args.table:
        Path(args.table).write_text(table)
    return 0


def run_cell(out: Path, name: str, options: list[str], common: list[str], root: str) -> dict | None:
    result_file = out / name / "results.json"
    if not result_file.exists():
        cmd = [sys.executable, "-m", "stealbench", "fit", *[a.replace("{root}", root) for a in options], *common,
               "--name", name]
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        print(f"[{time.time() - started:6.0f}s] {name}: rc {proc.returncode}", flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return None
    return json.loads(result_file.read_text())


def label_mode_table(args, out: Path, common: list[str]) -> int:
    lines = [f"MNIST, budget {args.budget} queries, seed {args.seed}: surrogate accuracy per label mode", "",
             "| cell | surrogate acc | fidelity | queries | images trained on | label-mode report |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, attack, defense, mode in LABEL_MODE_CELLS:
        r = run_cell(out, "lm__" + slug(row), [*attack, *defense, *mode], common, args.root)
        if r is None:
            lines.append(f"| {row} | failed | | | | |")
            continue
        m, extra = r["metrics"], r["extra_metrics"]
        images = m["queries"] // (4 if "smooth" in row else 1)
        report = ", ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in extra.items() if k.startswith("label_mode/"))
        lines.append(f"| {row} | {m['surrogate/acc']:.3f} | {m['surrogate/fidelity']:.3f} | {m['queries']} | "
                     f"{images} | {report} |")
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.table:
        Path(args.table).write_text(text)
    return 0


def print_table(args, cells) -> str:
    lines = [f"MNIST, budget {args.budget} queries, seed {args.seed}: surrogate test accuracy "
             "(fidelity to the undefended victim in parentheses)", "",
             "| attack | " + " | ".join(args.defenses) + " |",
             "| --- | " + " | ".join("---" for _ in args.defenses) + " |"]
    for attack in args.attacks:
        row = []
        for defense in args.defenses:
            r = cells.get((attack, defense))
            row.append("-" if r is None else
                       f"{r['metrics']['surrogate/acc']:.3f} ({r['metrics']['surrogate/fidelity']:.3f}), "
                       f"{r['metrics']['queries']} q")
        lines.append(f"| {attack} | " + " | ".join(row) + " |")
    victim = []
    for defense in args.defenses:
        r = next((c for (a, d), c in cells.items() if d == defense), None)
        victim.append("-" if r is None else f"{r['metrics']['victim/acc_defended']:.3f} "
                      f"(undefended {r['metrics']['victim/acc']:.3f})")
    lines.append("| *victim, benign accuracy* | " + " | ".join(victim) + " |")
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


if __name__ == "__main__":
    sys.exit(main())
