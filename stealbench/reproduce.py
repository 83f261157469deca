"""`stealbench reproduce PAPER`: a paper's experiments as one resumable grid, its claims checked, REPORT.md written.

A reproduction is a grid file (stealbench.grid) with `paper:`, `utility:` and `claims:` sections
(stealbench.analysis.claims_spec), registered under a name by a plugin (`register_reproductions`; the built-in lee2018
lives in stealbench/reproductions/) or given as a path. `--quick` runs `<stem>_quick.yaml` beside it.

The runs go to <output_dir>/runs through the grid runner, so a rerun skips finished runs; the report is rebuilt
from whatever is complete (a partial grid gives a partial report, its missing checks marked "no data").
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .arguments import ArgumentParser, at_least
from .analysis.claims import Claim
from .analysis.claims_spec import ClaimsSpec, SweepSpec, is_yaml_path, reproduction_file
from .errors import ConfigError


@dataclass
class Reproduction:
    name: str
    grid: Any  # stealbench.grid.Grid, its runs under <output_dir>/runs
    spec: ClaimsSpec
    output_dir: Path

    @property
    def source(self) -> Path:
        return self.grid.source

    @property
    def paper(self) -> dict[str, Any]:
        return self.spec.paper

    @property
    def utility(self) -> SweepSpec | None:
        return self.spec.utility

    @property
    def claims(self) -> list[Claim]:
        return self.spec.claims

    @property
    def runs_dir(self) -> Path:
        return self.output_dir / "runs"


def load(path: Path, output_dir: str | None, default_output: str) -> Reproduction:
    from .analysis.claims_spec import read_yaml_mapping
    from .grid import grid_from_spec

    spec = read_yaml_mapping(path, "reproduction file")
    out = Path(output_dir or spec.get("output_dir") or default_output)
    grid = grid_from_spec(spec, path, str(out / "runs"))
    if grid.claims is None or not grid.claims.claims:
        raise ConfigError(f"reproduction file {str(path)!r} has no `claims:` section; "
                          "for runs alone use `stealbench grid`")
    return Reproduction(grid.name, grid, grid.claims, out)


def reproduce_command(argv: list[str]) -> int:
    parser = ArgumentParser(  # one spelling per option, as in fit and grid (dashed forms: hidden aliases)
        prog="stealbench reproduce",
        description="Run a paper's experiments (a resumable grid), check its claims, write REPORT.md with figures.",
        epilog="Rerunning the same command resumes: finished runs are skipped and the report is rebuilt.")
    parser.add_argument("paper", help="a reproduction name (e.g. lee2018) or a reproduction YAML file")
    parser.add_argument("--quick", action="store_true", help="the small version (<paper>_quick.yaml)")
    parser.add_option("--output_dir", default=None,
                      help="where runs and REPORT.md go (default: runs/reproduce/<paper>[_quick])")
    parser.add_option("--dry_run", action="store_true", help="list the runs and their state, run nothing")
    parser.add_option("--report_only", action="store_true", help="rebuild REPORT.md from finished runs only")
    parser.add_argument("--subprocess", action="store_true", help="run each experiment in its own process")
    parser.add_argument("--jobs", type=at_least(1, "--jobs"), default=1,
                        help="run this many experiments at a time (`stealbench grid --jobs`)")
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "off"), default=None,
                        help="`stealbench fit --sandbox` for every run (default: auto)")
    args = parser.parse_args(argv)

    path = reproduction_file(args.paper, args.quick)
    stem = path.stem if is_yaml_path(args.paper) else args.paper + ("_quick" if args.quick else "")
    rep = load(path, args.output_dir, f"runs/reproduce/{stem}")
    from .grid import check_keys, set_sandbox
    from .grid_runner import dry_run_lines, run_grid

    set_sandbox(rep.grid, args.sandbox)

    if args.dry_run:
        print("\n".join(dry_run_lines(rep.grid, rep.grid.runs)))
        print(f"# {len(rep.grid.runs)} runs; output {rep.output_dir}")
        return 0
    started = time.perf_counter()
    status = 0
    report = None
    if not args.report_only:
        check_keys(rep.grid.runs)
        report = run_grid(rep.grid, subprocess_mode=args.subprocess, jobs=args.jobs)
        if report.interrupted:
            print("interrupted; run the same command again to resume")
            return 130
        status = 0 if report.ok else 1
    from .analysis.report import write_report

    path_md = write_report(rep, invocation_seconds=time.perf_counter() - started, grid_report=report,
                           command=_command(args))
    print(f"wrote {path_md}")
    return status


def _command(args: argparse.Namespace) -> str:
    parts = ["stealbench reproduce", args.paper]
    if args.quick:
        parts.append("--quick")
    if args.output_dir:
        parts.append(f"--output_dir {args.output_dir}")
    if getattr(args, "sandbox", None):
        parts.append(f"--sandbox {args.sandbox}")
    return " ".join(parts)


__all__ = ["Reproduction", "load", "reproduce_command"]
