"""Issue 19, item 5: an attacker who spreads its budget over k accounts, against the stateful defenses.

One `stealbench fit` per (defense, k, seed) with `--oracle.accounts k --oracle.benign_state own` (the benign users
an account of their own, so every k is compared with the same benign traffic and the benign account's alarm is a
false alarm); finished runs (their results.json) are reused when rerun. Prints a markdown table: per k, the share of
attacker accounts whose detector fired, the earliest alarm (queries into an account), the state each account costs
the defender, the benign account's alarm, and the attacker's accuracy.

    python bench/accounts.py --output_dir bench/out/accounts                      # MNIST, PRADA and ModelGuard-S
    python bench/accounts.py --data digits --budget 400 --rounds 3 --accounts 1,2 --output_dir /tmp/acc  # smoke

PRADA comes from its plugin (`pip install ./plugins/stealbench-prada`); a defense that is not installed is
reported as such, not skipped in silence.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run(out: Path, name: str, args: list[str]) -> dict | None:
    result = out / name / "results.json"
    if not result.exists():
        cmd = [sys.executable, "-m", "stealbench", "fit", *args, "--output_dir", str(out), "--name", name]
        print("$", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-1500:]}{proc.stdout[-1500:]}", file=sys.stderr)
            return None
    return json.loads(result.read_text())


def figures(results: dict) -> dict[str, float | None]:
    accounts = results.get("accounts") or {}
    per = accounts.get("per_account") or []
    reports = [a.get("report", {}) for a in per]
    alarms = [r["defense/report/alarm"] for r in reports if "defense/report/alarm" in r]
    firsts = [r["defense/report/alarm_query"] for r in reports if "defense/report/alarm_query" in r]
    sizes = [a["state_size"] for a in per if a.get("state_size") is not None]
    benign = (accounts.get("benign") or {}).get("report", {})
    return {"alarmed": sum(alarms) / len(alarms) if alarms else None,
            "first_alarm": min(firsts) if firsts else None,
            "state": statistics.mean(sizes) if sizes else None,
            "benign_alarm": benign.get("defense/report/alarm"),
            "acc": results["metrics"]["surrogate/acc"],
            "benign_acc": results["metrics"]["victim/acc_defended"],
            "per_account": per[0]["queries"] if per else None}


def cell(values: list, fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--root", default="../shared/data")
    ap.add_argument("--defenses", default="prada,modelguard-s")
    ap.add_argument("--accounts", default="1,4,16")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=int, default=6400)
    ap.add_argument("--rounds", type=int, default=7, help="JBDA rounds (100 -> 6,400 queries at 7)")
    ap.add_argument("--epochs_per_round", type=int, default=5)
    ap.add_argument("--victim_epochs", type=int, default=2)
    ap.add_argument("--split", default="round_robin", choices=["round_robin", "sequential"])
    ap.add_argument("--output_dir", required=True)
    opts = ap.parse_args()
    out = Path(opts.output_dir)
    data = ["--data", opts.data] + (["--data.root", opts.root] if opts.data not in ("digits",) else [])
    print(f"{opts.data}, JBDA {opts.rounds} rounds x {opts.epochs_per_round} epochs, budget {opts.budget}, victim "
          f"{opts.victim_epochs} epochs, soft labels, accounts split {opts.split}, benign users an account of their "
          f"own, seeds {opts.seeds}\n")
    print("| defense | accounts | queries per account | accounts alarmed | earliest alarm (queries into the "
          "account) | state per account | benign account alarmed | benign acc | attacker acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for defense in opts.defenses.split(","):
        for k in map(int, opts.accounts.split(",")):
            rows = []
            for seed in map(int, opts.seeds.split(",")):
                name = f"{opts.data}_{defense}_k{k}_{opts.split}_s{seed}"
                results = run(out, name, [*data, "--defense", defense, "--attack", "jbda",
                                          "--attack.rounds", str(opts.rounds),
                                          "--attack.epochs_per_round", str(opts.epochs_per_round),
                                          "--budget", str(opts.budget), "--victim.epochs", str(opts.victim_epochs),
                                          "--oracle.accounts", str(k), "--oracle.account_split", opts.split,
                                          "--oracle.benign_state", "own", "--seed", str(seed)])
                if results is not None:
                    rows.append(figures(results))
            if not rows:
                print(f"| {defense} | {k} | failed (see above) | | | | | | |")
                continue
            col = {key: [r[key] for r in rows] for key in rows[0]}
            print(f"| {defense} | {k} | {cell(col['per_account'], 'd')} | {cell(col['alarmed'], '.2f')} | "
                  f"{cell(col['first_alarm'], '.0f')} | {cell(col['state'], '.0f')} | "
                  f"{cell(col['benign_alarm'], '.0f')} | {cell(col['benign_acc'], '.3f')} | "
                  f"{cell(col['acc'], '.3f')} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
