"""`stealbench` command line. `fit` is a LightningCLI (see lightning_cli.py); `--version`, `plugins` and `list`
answer without importing Lightning."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from . import __version__
from .arguments import ArgumentParser, at_least, check_folder
from .errors import ConfigError, StealbenchError
from .signals import RunInterrupted, exit_code

COMMANDS = {
    "fit": "run one stealing experiment (victim -> defense -> attack -> results)",
    "plugins": "show loaded plugins, their versions and what they registered",
    "list": "list registered defenses, attacks, architectures, datasets, label modes or reproductions",
    "grid": "run a grid of experiments from a YAML file (resumes; --sweep: as a W&B sweep)",
    "leaderboard": "rank and compare finished runs (run folders or W&B): table, Markdown, CSV, plots",
    "tradeoff": "security against cost over a swept defense knob (plot, tables); defenses at equal cost",
    "reproduce": "run a paper's experiments, check its claims, write REPORT.md (e.g. reproduce lee2018 --quick)",
    "serve": "serve a victim behind a defense as an Open Inference Protocol (KServe V2 REST) endpoint",
}

USAGE = "usage: stealbench [--version] <command> [options]\n\ncommands:\n" + "".join(
    f"  {name:<12} {text}\n" for name, text in COMMANDS.items()) + (
    "\nexample: stealbench fit --defense deceptive --attack jbda\n"
    "help on one command: stealbench <command> --help\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_utf8(argv)
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE, end="")
            return 0
        if argv[0] in ("-V", "--version"):
            print(f"stealbench {__version__}")
            return 0
        command, rest = argv[0], argv[1:]
        if command == "fit":
            from .fit_quick import quick_answer

            answer = quick_answer(rest)  # the stored `fit --help`; a mistyped option name fails here (no torch)
            if answer is not None:
                print(answer, end="")
                return 0
            if not _asks_for_help(rest) and _uses_fork_server(rest):
                from .forkserver import warm_up

                warm_up()  # the attacker's fork server imports torch while this process parses and trains the victim
            from .lightning_cli import fit_main

            return fit_main(rest)
        if command == "plugins":
            return plugins_command(rest)
        if command == "list":
            return list_command(rest)
        if command == "grid":
            return grid_command(rest)
        if command == "leaderboard":
            from .analysis.leaderboard import leaderboard_command

            return leaderboard_command(rest)
        if command == "tradeoff":
            from .analysis.tradeoff_command import tradeoff_command

            return tradeoff_command(rest)
        if command == "serve":
            from .serve.command import serve_main

            return serve_main(rest)
        if command == "reproduce":
            from .reproduce import reproduce_command

            return reproduce_command(rest)
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean `stealbench {close[0]}`?" if close else ""
        raise StealbenchError(f"unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}.")
    except StealbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunInterrupted, KeyboardInterrupt) as exc:
        print(f"stealbench: {exc or 'interrupted by Ctrl-C'}; the run did not finish", file=sys.stderr)
        return exit_code(exc)


def _asks_for_help(args: list[str]) -> bool:
    """`--help`, `--defense.help KEY`, ...: no attacker runs, so no fork server to start (`--attack.help` asks one)."""
    names = [a.partition("=")[0] for a in args]
    return any(n in ("-h", "--help") or (n.endswith(".help") and n != "--attack.help") for n in names)


def _uses_fork_server(args: list[str]) -> bool:
    """Whether the attacker will fork from the fork server (--sandbox off, or no bwrap here): then start it early.
    A guess from the command line (a --config file may say otherwise); a wrong guess costs time, nothing else."""
    from .attacker.sandbox import bwrap_problem

    mode = "auto"
    for i, arg in enumerate(args):
        if arg == "--sandbox" and i + 1 < len(args):
            mode = args[i + 1]
        elif arg.startswith("--sandbox="):
            mode = arg.split("=", 1)[1]
    return mode == "off" or bwrap_problem() is not None


def check_utf8(argv: list[str]) -> None:
    """Python decodes undecodable argv bytes to lone surrogates, which fail later (run folder names, results.json,
    W&B) with a UnicodeEncodeError traceback: refuse them here, naming the option."""
    for i, token in enumerate(argv):
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            what = f"{argv[i - 1]} " if i and argv[i - 1].startswith("-") and "=" not in argv[i - 1] else ""
            # the original bytes, undecodable ones as \xNN: what the user typed, printable on any terminal
            shown = token.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise ConfigError(f"{what}'{shown}' is not valid UTF-8 text; use UTF-8 names and paths") from None


def plugins_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="stealbench plugins", description=COMMANDS["plugins"])
    parser.add_argument("--requirements", action="store_true",
                        help="print pip requirement lines pinning stealbench and every external plugin")
    args = parser.parse_args(argv)
    from .plugins import get_catalog

    catalog = get_catalog(attacks=True)
    if args.requirements:
        print(f"stealbench=={__version__}")
        for plugin in catalog.plugins:
            if not plugin.builtin:
                print(f"{plugin.distribution}=={plugin.version}")
        return 0
    from rich.table import Table
    from rich.text import Text  # plugin-provided text is shown as is, never read as rich markup

    table = Table(title="stealbench plugins", title_justify="left")
    for column in ("plugin", "distribution", "version", "registered"):
        table.add_column(column)
    for plugin in catalog.plugins:
        registered = "; ".join(f"{kind}: {', '.join(keys)}" for kind, keys in plugin.registered.items())
        table.add_row(*map(Text, (plugin.name, plugin.distribution or "(built-in)", plugin.version,
                                   registered or "-")))
    _console().print(table)
    return 0


def list_command(argv: list[str]) -> int:
    from .hookspecs import HOOK_KINDS

    kinds = list(HOOK_KINDS.values())
    parser = ArgumentParser(prog="stealbench list", description=COMMANDS["list"])
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(kinds)} (default: all)")
    parser.add_argument("--filter", default=None, help="only keys or descriptions containing this text")
    args = parser.parse_args(argv)
    if args.kind is not None and args.kind not in kinds:
        close = difflib.get_close_matches(args.kind, kinds, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise StealbenchError(f"cannot list {args.kind!r}.{hint} Choose one of: {', '.join(kinds)}.")
    from .plugins import get_catalog

    catalog = get_catalog(attacks=True)
    from rich.table import Table
    from rich.text import Text  # plugin-provided text is shown as is, never read as rich markup

    console = _console()
    for kind in [args.kind] if args.kind else kinds:
        table = Table(title=kind, title_justify="left")
        # a label mode also says which defenses it answers and which options it takes
        extra = (lambda e: (e.obj.summary(),)) if kind == "label_modes" else (lambda e: ())
        for column in ("key", "description", *(("answers / options",) if kind == "label_modes" else ()), "source"):
            table.add_column(column)
        for entry in catalog.registry(kind).entries(args.filter):
            table.add_row(*map(Text, (entry.key, entry.description, *extra(entry), entry.source)))
        console.print(table)
        if kind == "architectures":
            console.print("  ...and any timm model name (e.g. resnet18), created without pretrained weights")
    return 0


def grid_command(argv: list[str]) -> int:
    # options shared with `fit` are spelled as there (--output_dir); the dashed forms stay as hidden aliases
    parser = ArgumentParser(
        prog="stealbench grid", description=COMMANDS["grid"],
        epilog="Runs are named deterministically; completed runs (results.json) are skipped, so the same command "
               "resumes an interrupted grid. See configs/experiments/ for grid files.")
    parser.add_argument("file", help="grid YAML file")
    parser.add_option("--dry_run", action="store_true", help="print the runs (as `stealbench fit` commands)")
    parser.add_option("--output_dir", default=None, help="parent folder of the run folders "
                      "(default: the file's output_dir, else runs/<grid name>)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only runs whose name contains TEXT (repeatable; all must match)")
    parser.add_argument("--limit", type=at_least(1, "--limit"), default=None,
                        help="run at most this many runs of the selection (>= 1)")
    parser.add_argument("--subprocess", action="store_true",
                        help="run each experiment in its own `stealbench fit` process (default: in-process)")
    parser.add_option("--fail_fast", action="store_true", help="stop at the first failed run")
    parser.add_argument("--jobs", type=at_least(1, "--jobs"), default=1,
                        help="run this many runs at a time, each its own process with cores / JOBS threads "
                             "(default 1: one after another)")
    from .grid_launcher import add_launcher_options, launcher_options

    add_launcher_options(parser)  # --launcher submitit, --launcher.backend slurm|local, ...
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "off"), default=None,
                        help="`stealbench fit --sandbox` for every run (default: the grid file's, else auto)")
    parser.add_option("--grid_run", default=None, metavar="NAME",
                        help="run the one run of this name (what a W&B sweep agent calls)")
    parser.add_argument("--sweep", action="store_true",
                        help="write a W&B sweep definition (grid method) whose agents call this command")
    parser.add_option("--sweep_file", default=None,
                        help="where --sweep writes (default: <output dir>/sweep.yaml)")
    parser.add_argument("--program", default=None,
                        help="grid file path as agents will see it (default: FILE as given)")
    args = parser.parse_args(argv)
    launcher = launcher_options(args)  # bad launcher options, or no submitit, fail before the grid file is read
    from .grid import check_keys, load_grid, set_sandbox
    from .grid_runner import dry_run_lines, run_grid

    grid = load_grid(args.file, args.output_dir)
    set_sandbox(grid, args.sandbox)
    check_folder("output_dir", grid.output_dir)
    if args.sweep_file:
        check_folder("sweep_file", args.sweep_file, file=True)
    if args.sweep:
        check_keys(grid.runs)
        check_run_options(grid.runs)
        from .sweep import write_sweep

        path = Path(args.sweep_file or Path(grid.output_dir) / "sweep.yaml")
        write_sweep(grid, path, program=args.program or args.file)
        print(path.read_text(), end="")
        print(f"\nwrote {path} ({len(grid.runs)} runs). Create the sweep with `wandb sweep --project PROJECT "
              f"{path}`,\nthen start `wandb agent ENTITY/PROJECT/SWEEP_ID` on as many machines as you like.")
        return 0
    runs = [grid.by_name(args.grid_run)] if args.grid_run else [
        r for r in grid.runs if all(text in r.name for text in args.only)]
    if args.limit is not None:
        runs = runs[: args.limit]
    if args.dry_run:
        print("\n".join(dry_run_lines(grid, runs)))
        print(f"# {len(runs)} of {len(grid.runs)} runs; output {grid.output_dir}")
        return 0
    check_keys(runs)
    check_run_options(runs)
    report = run_grid(grid, runs, subprocess_mode=args.subprocess, fail_fast=args.fail_fast, jobs=args.jobs,
                      launcher=launcher)
    if report.interrupted:
        return report.interrupt_code
    if grid.claims is not None and grid.claims.claims:
        print(f"this grid carries {len(grid.claims.claims)} claims; check them against its runs with:\n"
              f"  stealbench leaderboard {grid.output_dir} --claims {args.file}")
    return 0 if report.ok else 1


def check_run_options(runs: list) -> None:
    """Fail before the first run when a grid's options are bad (`common: {victim: {epochs: -1}}`), not once per
    run in its error.txt. Parsing every run costs ~0.2 s each: one run per distinct data, defense, attack, label
    mode, budget and seed value covers every option the grid passes."""
    from .lightning_cli import check_fit_args

    covered: set[tuple[str, str]] = set()
    for run in runs:
        values = {(key, repr(value)) for key, value in run.identity.items()}
        if values <= covered:
            continue
        covered |= values
        try:
            check_fit_args(run.args)
        except StealbenchError as exc:
            raise ConfigError(f"grid run {run.name}: {exc}") from None


def _console():
    from rich.console import Console

    # piped output (files, tests, CI logs) gets wide tables instead of names cut at 80 columns
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
