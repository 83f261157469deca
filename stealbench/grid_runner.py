"""Running a grid: one run after another, resumable, each in-process or as its own `stealbench fit`.

A run folder with a complete results.json is skipped, so a re-run resumes; a failure does not stop the grid
(unless fail_fast); another process holding a run's lock keeps that run. Imports Lightning only when a run is
made in this process.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .grid import Grid, GridRun
from .results import RESULTS_FILE
from .rundir import RunDirBusyError, is_busy, is_complete, set_aside_error, taken_by_another
from .signals import RunInterrupted, child_exit_interrupted, exit_code, handle_signals, spawn_child


@dataclass
class GridReport:
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete before this invocation
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: runs another process was running (its lock held) or finished meanwhile: left to it, not run twice
    busy: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: the exit status an interrupted grid should end with (130 Ctrl-C, 143 SIGTERM)
    interrupt_code: int = 130

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def _prepare_folder(folder: Path) -> None:
    """An earlier attempt left a folder without results.json: keep its error, out of the way of the new attempt."""
    set_aside_error(folder)


class _Busy(Exception):
    """The run folder turned out to be held by another process (it took the lock after our check)."""


def _run_in_process(args: list[str]) -> None:
    from .lightning_cli import fit_main

    try:
        fit_main(args)
    except RunDirBusyError as exc:
        raise _Busy(str(exc)) from exc


def _run_subprocess(args: list[str]) -> None:
    code = spawn_child([sys.executable, "-m", "stealbench", "fit", *args])
    signum = child_exit_interrupted(code)
    if signum is not None:  # the child was stopped by a signal: the grid stops, the run does not count as failed
        raise RunInterrupted(signum)
    if code != 0:
        folder = Path(_option(args, "--output_dir")) / _option(args, "--name")
        holder = is_busy(folder)
        if holder is not None:
            raise _Busy(f"run folder {folder} is in use by another stealbench process (pid {holder})")
        raise RuntimeError(f"`stealbench fit` exited with status {code}")


def _option(args: list[str], name: str) -> str:
    """The last value given for `name` (later options win, as in jsonargparse)."""
    return args[len(args) - 1 - args[::-1].index(name) + 1]


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_grid(grid: Grid, runs: list[GridRun] | None = None, *, subprocess_mode: bool = False,
             fail_fast: bool = False, runner: Callable[[list[str]], None] | None = None,
             progress: bool | None = None, jobs: int = 1, launcher=None) -> GridReport:
    """Run `runs` (default: all), skipping complete ones; a failure does not stop the grid. `jobs` > 1: that many
    at a time, each its own `stealbench fit` process with its share of the cores (grid_jobs.py). `launcher` (a
    grid_launcher.LauncherOptions): each a cluster job through submitit (grid_launcher.py)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import console as out

    runs = grid.runs if runs is None else runs
    runner = runner or (_run_subprocess if subprocess_mode else _run_in_process)
    report = GridReport()
    todo = []
    for run in runs:
        if is_complete(run.folder(grid.output_dir)):
            report.skipped.append(run.name)
        else:
            todo.append(run)
    out.info(f"grid {out.escape(grid.name)}: {len(runs)} runs, {len(report.skipped)} already complete, "
             f"{len(todo)} to run -> {out.escape(grid.output_dir)}")
    if not todo:
        return report
    if launcher is not None:
        from .grid_launcher import run_launched

        with handle_signals():
            run_launched(grid, todo, report, out, launcher, fail_fast=fail_fast)
        return _summary(grid, report, out)
    if jobs > 1:
        from .grid_jobs import run_parallel

        with handle_signals():
            run_parallel(grid, todo, report, out, jobs=jobs, fail_fast=fail_fast)
        return _summary(grid, report, out)
    show = sys.stdout.isatty() if progress is None else progress
    bar = Progress(TextColumn("[bold]grid[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=out.console,
                   disable=not show, transient=False)
    with handle_signals():  # SIGTERM and Ctrl-C stop the grid, whichever run or phase is going on
        _loop(grid, todo, runner, report, bar, fail_fast, out)
    return _summary(grid, report, out)


def _summary(grid: Grid, report: GridReport, out) -> GridReport:
    summary = (f"grid {out.escape(grid.name)}: {len(report.completed)} completed now, {len(report.skipped)} were "
               f"already complete, {len(report.failed)} failed"
               + (f", {len(report.busy)} left to another process" if report.busy else ""))
    out.info(summary + (" (interrupted)" if report.interrupted else ""))
    for name, message in report.failed:
        out.info(f"  failed: {out.escape(name)}: {out.escape(message.splitlines()[0] if message else '')}  (see "
                 f"{out.escape(Path(grid.output_dir) / name / 'error.txt')})")
    return report


def _loop(grid, todo, runner, report, bar, fail_fast, out) -> None:
    total_weight = sum(r.weight for r in todo)
    done_weight = 0.0
    spent = 0.0
    with bar:
        task = bar.add_task(out.escape(grid.name), total=len(todo), eta="?")
        for i, run in enumerate(todo, start=1):
            folder = run.folder(grid.output_dir)
            why = taken_by_another(folder)  # another grid on this output folder runs (ran) it
            if why is not None:
                report.busy.append(run.name)
                out.info(f"grid run {i}/{len(todo)}: {out.escape(run.name)} skipped: {why}")
                bar.update(task, advance=1)
                continue
            out.info(f"[bold]grid run {i}/{len(todo)}[/]: {out.escape(run.name)}")
            if folder.exists():
                _prepare_folder(folder)
            t0 = time.perf_counter()
            try:
                runner(run.args)
            except (RunInterrupted, KeyboardInterrupt) as exc:
                report.interrupted = True
                report.interrupt_code = exit_code(exc) or 130
                out.info(f"grid {out.escape(exc or 'interrupted')} during {out.escape(run.name)}; run the same "
                         "command again to resume")
                break
            except _Busy as exc:
                report.busy.append(run.name)
                out.info(f"grid run {out.escape(run.name)} skipped: {out.escape(exc)}")
            except BaseException as exc:  # noqa: BLE001 - one failed run must not stop the grid
                message = f"{type(exc).__name__}: {exc}".strip()
                report.failed.append((run.name, message))
                out.info(f"[red]grid run failed[/]: {out.escape(run.name)}: {out.escape(message)}")
                if isinstance(exc, SystemExit) and exc.code in (0, None):
                    report.failed.pop()  # e.g. --help inside common options; nothing failed
                if fail_fast:
                    break
            else:
                if is_complete(folder):
                    report.completed.append(run.name)
                else:
                    report.failed.append((run.name, f"finished without a complete {folder / RESULTS_FILE}"))
            elapsed = time.perf_counter() - t0
            spent += elapsed
            done_weight += run.weight
            remaining = spent / done_weight * (total_weight - done_weight) if done_weight else None
            bar.update(task, advance=1, eta=_fmt_seconds(remaining))
            out.info(f"grid: {i}/{len(todo)} done ({len(report.failed)} failed), last run {elapsed:.0f}s, "
                     f"estimated time left {_fmt_seconds(remaining)}")


# ----------------------------------------------------------------------------------------------------- printing

def dry_run_lines(grid: Grid, runs: list[GridRun]) -> list[str]:
    import shlex

    lines = []
    for run in runs:
        state = "complete" if is_complete(run.folder(grid.output_dir)) else "todo"
        lines.append(f"# {run.index:>4} [{state}] {run.name}")
        lines.append("stealbench fit " + " ".join(shlex.quote(a) for a in run.args))
    return lines


__all__ = ["GridReport", "dry_run_lines", "is_complete", "run_grid"]
