"""`stealbench leaderboard`: finished runs compared side by side (terminal table, Markdown, CSV, plots).

Reads run folders (results.json; no server) or, with --wandb ENTITY/PROJECT, the W&B runs of a project. Never imports
Lightning or torch. Every run is validated first; failed, partial or malformed runs are listed and skipped, never
averaged in.

Rows: one per (data, attack, label mode, other settings, budget, defense), seeds aggregated as mean ± sample std.
Derived per row, against the undefended (`none`) runs of the same data, attack, label mode and settings:

- accuracy drop: undefended surrogate accuracy minus defended surrogate accuracy at the same budget, paired by
  seed (mean ± std over the seeds present in both).
- query multiplier: A = the accuracy the undefended attack reached with B queries (its curve at B, from the
  seed's largest-budget undefended run). Queries needed to reach A are read off each curve the same way, the
  first checkpoint crossing of A, interpolated linearly in log(queries); multiplier = queries needed against the
  defense / queries needed without it (= B when the undefended curve rises monotonically; reading both curves
  alike makes a defense that changes nothing score exactly 1x on noisy curves). When the defended curve never
  reaches A the needed queries exceed its last checkpoint Q: reported as "> Q/B" (a lower bound); when its first
  checkpoint q0 already reaches A, as "<= q0/B". Over seeds: "m ± s" when every seed crossed, "≥ m" when some
  only give lower bounds (mean of crossings and bounds, itself a lower bound), "> m" when none crossed.
- best response (stealbench.analysis.best_response): per (data, attack family, setting, budget, defense), the
  attacker variant (label mode and its options, attack parameters) with the highest mean accuracy, and the drop
  and multiplier against the undefended best response; defenses ranked by it (their worst case). In the CSV as
  `best_response_*` columns on every row of the cell; the non-adaptive `soft` rows stay as they are.
- equal cost (stealbench.analysis.tradeoff): when a defense's knob is swept, each defense's best setting within
  given costs to benign users (`stealbench tradeoff` draws the plot behind it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import ArgumentParser, check_folder
from ..errors import StealbenchError
from .best_response import best_responses, of_rows
from .plots import plot_curves, plot_utility
from .rows import Row, build_rows
from .runs import load_folders, load_wandb
from .tables import print_table, write_csv, write_markdown
from .tradeoff import equal_cost_markdown, tradeoff_tables, wandb_tradeoff_tables

#: the only `sealed` value --require_sealed accepts
OS_SANDBOX = "os-sandbox"


def build(paths: list[str] | None = None, wandb_path: str | None = None, tags: list[str] | None = None,
          require_sealed: bool = False) -> tuple[list[Row], list[tuple[str, str]]]:
    if wandb_path:
        runs, problems = load_wandb(wandb_path, tags)
    else:
        runs, problems = load_folders(paths or [])
    if require_sealed:  # an attack that could read the victim cache or the run folder is no result to rank
        refused = [r for r in runs if r.sealed != OS_SANDBOX]
        runs = [r for r in runs if r.sealed == OS_SANDBOX]
        problems = problems + [(r.source, f"attacker sealed {r.sealed or 'unknown (an older run)'}, not in an OS "
                                          "sandbox (refused by --require_sealed)") for r in refused]
    rows, dupes = build_rows(runs) if runs else ([], [])
    best_responses(rows)  # sets row.best: the cell's best response over attacker variants
    return rows, problems + dupes


def leaderboard_command(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="stealbench leaderboard",
        description="Rank and compare finished runs: terminal table, leaderboard.md, leaderboard.csv and plots. "
                    "Reads run folders (results.json) under DIR, or a W&B project with --wandb.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="run folders or folders holding run folders")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="read the runs of this W&B project instead (online)")
    parser.add_argument("--tag", action="append", default=None,
                        help="with --wandb: only runs with this tag (e.g. grid:paper_mnist; repeatable)")
    # --output_dir as in `fit` and `grid`; --out (the older name) and dashed spellings stay as hidden aliases
    parser.add_argument("--output_dir", default="leaderboard", metavar="DIR",
                        help="folder for leaderboard.md/.csv and plots")
    parser.add_argument("--out", dest="output_dir", default="leaderboard", help=argparse.SUPPRESS)
    parser.add_option("--no_plots", action="store_true", help="skip the PNG plots")
    parser.add_option("--log_wandb", nargs="?", const="", default=None, metavar="ENTITY/PROJECT",
                        help="log the table (and plots) to W&B as a wandb.Table, in a run of job type "
                             "`leaderboard` (default project: --wandb's, else stealbench)")
    parser.add_argument("--claims", default=None, metavar="NAME|FILE",
                        help="also check the claims of a reproduction (e.g. lee2018) or of a grid file with a "
                             "`claims:` section against these runs; writes claims.md")
    parser.add_option("--require_sealed", action="store_true",
                      help="rank only runs whose attacker ran in the OS sandbox (results.json sealed: os-sandbox); "
                           "memory-only runs are listed as refused")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give run folders (DIR ...) or --wandb ENTITY/PROJECT")
    out = Path(args.output_dir)
    check_folder("output_dir", out)  # before reading runs: fail in milliseconds, write nothing
    claims = None
    if args.claims is not None:
        from .claims_spec import load_claims_spec

        claims = load_claims_spec(args.claims)
    rows, problems = build(args.dirs, args.wandb, args.tag, require_sealed=args.require_sealed)
    sources = [f"W&B {args.wandb}"] if args.wandb else list(args.dirs)
    if not rows:
        print_table([], problems, "stealbench leaderboard")
        raise StealbenchError(f"no complete runs found in {', '.join(sources)}")
    out.mkdir(parents=True, exist_ok=True)
    bests = of_rows(rows)
    tradeoff = tradeoff_tables(bests)  # the equal-cost comparison, when some defense's knob is swept
    plots = [] if args.no_plots else plot_curves(rows, out) + plot_utility(rows, out)
    write_markdown(rows, problems, out / "leaderboard.md", sources, plots, bests,
                   equal_cost_markdown(tradeoff[1]) if tradeoff else "")
    write_csv(rows, out / "leaderboard.csv")
    print_table(rows, problems, f"stealbench leaderboard ({sum(len(r.runs) for r in rows)} runs)", bests)
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}"
          + (f" and {len(plots)} plots ({', '.join(p.name for p in plots)})" if plots else ""))
    if claims is not None:
        from .report import check_claims

        check_claims([run for row in rows for run in row.runs], claims, out, sources)
        print(f"wrote {out / 'claims.md'}")
    if args.log_wandb is not None:
        from .wandb_log import leaderboard_tables, log_to_wandb

        tables = leaderboard_tables(rows, bests)
        if tradeoff:
            tables.update(wandb_tradeoff_tables(*tradeoff))
        print(f"W&B: {log_to_wandb(tables, args.log_wandb or args.wandb, plots)}")
    return 0


__all__ = ["build", "leaderboard_command"]
