"""`stealbench reproduce PAPER`: a paper's experiments as one resumable grid, its claims checked, REPORT.md written.

A reproduction file (configs/reproduce/<paper>.yaml, and <paper>_quick.yaml for --quick) is a grid file
(stealbench.grid) with three more sections, read here and removed before the grid expands:

- ``paper:`` title, authors, reference (shown in the report);
- ``utility:`` a defense parameter sweep computed from the runs' victims (stealbench.utility_sweep);
- ``claims:`` the claims and their checks (stealbench.claims).

The runs go to <output_dir>/runs through the grid runner, so a rerun skips finished runs; the report is rebuilt
from whatever is complete (a partial grid gives a partial report, its missing checks marked "no data").
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .claims import Claim, parse_claims
from .arguments import ArgumentParser
from .errors import ConfigError
from .utility_sweep import SweepSpec, parse_sweep

#: reproduction files shipped with stealbench (a source checkout's configs/reproduce)
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "configs" / "reproduce"
EXTRA_KEYS = ("paper", "utility", "claims")


@dataclass
class Reproduction:
    name: str
    source: Path
    paper: dict[str, Any]
    grid: Any  # stealbench.grid.Grid
    utility: SweepSpec | None
    claims: list[Claim]
    output_dir: Path

    @property
    def runs_dir(self) -> Path:
        return self.output_dir / "runs"


def find_file(paper: str, quick: bool) -> Path:
    """`lee2018` -> configs/reproduce/lee2018.yaml (lee2018_quick.yaml with --quick); a path is taken as it is."""
    if paper.endswith((".yaml", ".yml")):
        path = Path(paper)
        if not path.exists():
            raise ConfigError(f"reproduction file {paper!r} does not exist")
        return path
    path = BUILTIN_DIR / f"{paper}{'_quick' if quick else ''}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml") if not p.stem.endswith("_quick"))
        raise ConfigError(f"no reproduction {paper!r}{' (quick)' if quick else ''}; known: {', '.join(known) or 'none'}"
                          f" (files in {BUILTIN_DIR}), or pass a reproduction YAML file")
    return path


def load(path: Path, output_dir: str | None, default_output: str) -> Reproduction:
    from .grid import Grid, expand

    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"reproduction file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise ConfigError(f"reproduction file {str(path)!r} must hold a mapping")
    extras = {k: spec.pop(k, None) for k in EXTRA_KEYS}
    name = str(spec.get("name") or path.stem)
    out = Path(output_dir or spec.pop("output_dir", None) or default_output)
    spec.pop("output_dir", None)
    runs_dir = out / "runs"
    grid = Grid(name=name, output_dir=str(runs_dir), runs=expand(spec, name=name, output_dir=str(runs_dir)),
                source=path, description=str(spec.get("description") or ""))
    paper = extras["paper"] or {}
    if not isinstance(paper, dict):
        raise ConfigError("`paper:` must be a mapping (title, authors, reference)")
    return Reproduction(name, path, paper, grid, parse_sweep(extras["utility"]), parse_claims(extras["claims"]), out)


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
    args = parser.parse_args(argv)

    path = find_file(args.paper, args.quick)
    stem = Path(args.paper).stem if args.paper.endswith((".yaml", ".yml")) else args.paper + ("_quick" if args.quick
                                                                                              else "")
    rep = load(path, args.output_dir, f"runs/reproduce/{stem}")
    from .grid import check_keys, dry_run_lines, run_grid

    if args.dry_run:
        print("\n".join(dry_run_lines(rep.grid, rep.grid.runs)))
        print(f"# {len(rep.grid.runs)} runs; output {rep.output_dir}")
        return 0
    started = time.perf_counter()
    status = 0
    report = None
    if not args.report_only:
        check_keys(rep.grid.runs)
        report = run_grid(rep.grid, subprocess_mode=args.subprocess)
        if report.interrupted:
            print("interrupted; run the same command again to resume")
            return 130
        status = 0 if report.ok else 1
    from .report import write_report

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
    return " ".join(parts)


__all__ = ["Reproduction", "find_file", "load", "reproduce_command"]
