"""`stealbench tradeoff`: security against cost for runs that sweep a defense's knob.

Writes the security-against-cost plots (tradeoff_<data>_b<budget>.png: attacker accuracy and fidelity, best
response and non-adaptive, against benign accuracy drop and total variation), tradeoff.csv (the points behind
them), equal_cost.csv and tradeoff.md (each defense's best setting within given costs, ranked). Reads run folders
or a W&B project like `stealbench leaderboard`; never imports Lightning or torch. See stealbench.analysis.tradeoff
for what is measured and why the equal-cost choice is fair.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..arguments import ArgumentParser, at_least, check_folder
from ..errors import ConfigError, StealbenchError
from .best_response import of_rows
from .leaderboard import build
from .tradeoff import (COSTS, DEFAULT_LEVELS, EQUAL_COST_COLUMNS, POINT_COLUMNS, TradeoffError, check_swept,
                       equal_cost, equal_cost_columns, equal_cost_markdown, equal_cost_values, point_values, points_of,
                       wandb_tradeoff_tables)


def _level(option: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{option} expects numbers, got {text!r}") from None
        if not value >= 0:
            raise ConfigError(f"{option} must be costs >= 0, got {text}")
        return value

    return parse


def tradeoff_command(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="stealbench tradeoff",
        description="Security against cost for runs that sweep a defense's knob: the attacker's accuracy and "
                    "fidelity (best response over label modes) against the defender's cost (benign accuracy drop, "
                    "total variation of released probabilities), and defenses compared at equal cost.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="run folders or folders holding run folders")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="read the runs of this W&B project instead (online)")
    parser.add_argument("--tag", action="append", default=None, help="with --wandb: only runs with this tag")
    parser.add_argument("--output_dir", default="tradeoff", metavar="DIR",
                        help="folder for tradeoff.md, tradeoff.csv, equal_cost.csv and the plots")
    parser.add_argument("--budget", action="append", type=at_least(1, "--budget"), default=None,
                        help="only this budget (repeatable; default: every budget run)")
    for cost, levels in DEFAULT_LEVELS.items():
        parser.add_option(f"--{cost}_levels", nargs="+", type=_level(f"--{cost}_levels"), default=list(levels),
                          metavar="X", help=f"cost levels of the equal-cost table for {COSTS[cost][0]} "
                                            f"(default: {' '.join(map(str, levels))})")
    parser.add_option("--no_plots", action="store_true", help="skip the PNG plots")
    parser.add_option("--log_wandb", nargs="?", const="", default=None, metavar="ENTITY/PROJECT",
                      help="log the tables behind the plot (wandb.Table) and the plots to W&B, in a run of job "
                           "type `leaderboard` (default project: --wandb's, else stealbench)")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give run folders (DIR ...) or --wandb ENTITY/PROJECT")
    out = Path(args.output_dir)
    check_folder("output_dir", out)
    rows, problems = build(args.dirs, args.wandb, args.tag)
    sources = [f"W&B {args.wandb}"] if args.wandb else list(args.dirs)
    if not rows:
        raise StealbenchError(f"no complete runs found in {', '.join(sources)}"
                              + (f" ({len(problems)} skipped: {problems[0][1]}, ...)" if problems else ""))
    bests = of_rows(rows)
    if args.budget:
        ran = sorted({b.budget for b in bests})
        bests = [b for b in bests if b.budget in args.budget]
        if not bests:
            raise TradeoffError(f"no runs at budget {', '.join(map(str, args.budget))}; budgets run: "
                                f"{', '.join(map(str, ran))}")
    points = points_of(bests)
    knobs = check_swept(points, sum(len(r.runs) for r in rows), sources)
    entries = equal_cost(points, {cost: tuple(getattr(args, f"{cost}_levels")) for cost in DEFAULT_LEVELS})
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "tradeoff.csv", POINT_COLUMNS, [point_values(p, knobs) for p in points])
    _write_csv(out / "equal_cost.csv", EQUAL_COST_COLUMNS, [equal_cost_values(e) for e in entries])
    plots = []
    if not args.no_plots:
        from .tradeoff_plot import plot_tradeoff

        plots = plot_tradeoff(points, knobs, out)
    # knobs are found per slice (data, attack, pool, budget): a defense swept in several slices is named once
    swept = "; ".join(sorted({f"{key[-1]} ({', '.join(names)})" for key, names in knobs.items() if names}))
    (out / "tradeoff.md").write_text(
        f"# stealbench: security against cost\n\n{sum(len(r.runs) for r in rows)} runs from {', '.join(sources)}; "
        f"knobs swept: {swept}. Attacker: the best response over the attacker variants that ran "
        "(stealbench.analysis.best_response).\n\n" + equal_cost_markdown(entries)
        + ("\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n" if plots else "")
        + (f"\nSkipped {len(problems)} run(s): " + "; ".join(f"`{s}`: {r}" for s, r in problems) + "\n"
           if problems else ""))
    _print_equal_cost(entries, f"stealbench tradeoff: defenses at equal cost (knobs swept: {swept})")
    print(f"wrote {out / 'tradeoff.md'}, {out / 'tradeoff.csv'}, {out / 'equal_cost.csv'}"
          + (f" and {len(plots)} plots ({', '.join(p.name for p in plots)})" if plots else ""))
    if problems:
        print(f"skipped {len(problems)} run(s), not averaged in (listed in tradeoff.md)")
    if args.log_wandb is not None:
        from .wandb_log import log_to_wandb

        where = log_to_wandb(wandb_tradeoff_tables(points, entries, knobs), args.log_wandb or args.wandb, plots,
                             name="tradeoff")
        print(f"W&B: {where}")
    return 0


def _write_csv(path: Path, columns: list[str], lines: list[list]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in line] for line in lines])


def _print_equal_cost(entries, title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=None if os.isatty(1) else 320)
    table = Table(title=Text(title), title_justify="left")  # knob names come from the runs' configs
    cols = equal_cost_columns(entries)
    for col in cols:
        table.add_column(col, justify="right" if col in ("budget", "rank") else "left")
    previous = None
    for e in entries:
        if previous is not None and (e.cell, e.cost, e.level) != previous:
            table.add_section()
        previous = (e.cell, e.cost, e.level)
        table.add_row(*map(Text, equal_cost_values(e, "setting" in cols)),
                      style="bold" if e.rank == 1 and e.chosen else None)
    console.print(table)


__all__ = ["tradeoff_command"]
