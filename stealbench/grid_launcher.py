"""Running a grid's cells as cluster jobs (`stealbench grid FILE --launcher submitit`), through submitit.

Each cell is one submitit job (on SLURM, all of them one job array, at most `--launcher.array_parallelism` at a
time) that runs the cell exactly as `--jobs N` does: grid_jobs.run_cell, a `stealbench fit` process with
`--launcher.cpus_per_task` threads, its output in `<output dir>/.logs/<run>.log`. The jobs' own files (pickles,
stdout, stderr) go to `--launcher.folder` (default `<output dir>/.submitit/`, named by job id). This process submits, polls
the jobs (every 0.5 s at first, backing off to 10 s) and prints the same per-run lines and final count as a local
grid. Resume and run-folder locks are as in grid_runner: complete cells are not submitted, a cell another process
holds is left to it. Ctrl-C or SIGTERM cancels every submitted job that has not finished.

`--launcher.backend local` runs the jobs on this machine (submitit's LocalExecutor, at most cores / cpus_per_task
at a time unless `--launcher.array_parallelism` says otherwise): the same path, testable without a cluster.
submitit is an optional dependency: `pip install 'stealbench[cluster]'`.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .arguments import at_least
from .errors import ConfigError
from .grid import Grid, GridRun
from .grid_jobs import Jobs, available_cores, run_cell
from .rundir import taken_by_another
from .signals import RunInterrupted, exit_code

LAUNCHERS = ("submitit",)
BACKENDS = ("slurm", "local")
INSTALL_HINT = "pip install 'stealbench[cluster]'"
#: hidden, so that leaderboards reading the output folder never take it for a run
SUBMITIT_DIR = ".submitit"
#: seconds between polls: the first, and the most it backs off to
POLL_FIRST_S, POLL_MAX_S = 0.5, 10.0


@dataclass(frozen=True)
class LauncherOptions:
    backend: str = "slurm"
    folder: str | None = None  # None: <output dir>/.submitit
    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 2
    mem_gb: float | None = None
    array_parallelism: int | None = None  # None: slurm 256 (submitit's default), local cores // cpus_per_task


#: option name -> (argparse type, help); all default to None, so that "given" can be told from "left out"
_OPTIONS: dict[str, tuple[Any, str]] = {
    "backend": (None, "where the jobs run: slurm (default) or local (this machine, submitit's LocalExecutor)"),
    "folder": (str, f"submitit's folder for job files and logs (default: <output dir>/{SUBMITIT_DIR})"),
    "partition": (str, "SLURM partition (default: the cluster's default)"),
    "timeout_min": (at_least(1, "--launcher.timeout_min"), "time limit of each job in minutes (default 60)"),
    "cpus_per_task": (at_least(1, "--launcher.cpus_per_task"),
                      "cores of each job; the cell's torch threads (default 2)"),
    "mem_gb": (None, "memory of each job in GB (default: the cluster's default)"),
    "array_parallelism": (at_least(1, "--launcher.array_parallelism"),
                          "at most this many jobs at a time (default: slurm 256, local cores / cpus_per_task)"),
}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--launcher.mem_gb expects a number, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"--launcher.mem_gb must be > 0, got {text}")
    return value


def add_launcher_options(parser) -> None:
    """`--launcher submitit` and its `--launcher.*` options, on `stealbench grid`'s parser."""
    parser.add_argument("--launcher", choices=LAUNCHERS, default=None,
                        help="run each cell as a cluster job through submitit (SLURM, or --launcher.backend "
                             f"local); needs {INSTALL_HINT}")
    for name, (kind, text) in _OPTIONS.items():
        extra: dict[str, Any] = {"choices": BACKENDS} if name == "backend" else {
            "type": _positive_float if name == "mem_gb" else kind}
        parser.add_argument(f"--launcher.{name}", dest=f"launcher_{name}", default=None, help=text, **extra)


def launcher_options(args) -> LauncherOptions | None:
    """The parsed `--launcher*` options -> LauncherOptions (None: no launcher); bad combinations refused here,
    before the grid file is read."""
    given = {name: getattr(args, f"launcher_{name}") for name in _OPTIONS
             if getattr(args, f"launcher_{name}") is not None}
    if args.launcher is None:
        if given:
            raise ConfigError(f"--launcher.{next(iter(given))} needs --launcher submitit")
        return None
    for option, conflict in (("--jobs", args.jobs > 1), ("--subprocess", args.subprocess), ("--sweep", args.sweep)):
        if conflict:
            raise ConfigError(f"--launcher {args.launcher} and {option} do not go together: the launcher runs each "
                              "cell as a job of its own (its size: --launcher.cpus_per_task)")
    options = LauncherOptions(**given)
    if options.backend == "local" and options.partition is not None:
        raise ConfigError("--launcher.partition is a SLURM option; --launcher.backend local has no partitions")
    require_submitit()
    return options


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--launcher submitit needs the submitit package: {INSTALL_HINT}") from None
    return submitit


def make_executor(grid: Grid, options: LauncherOptions):
    submitit = require_submitit()
    folder = Path(options.folder or Path(grid.output_dir) / SUBMITIT_DIR)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.backend)  # files named by job id
    except RuntimeError as exc:  # no srun on PATH
        raise ConfigError(f"--launcher.backend {options.backend}: no SLURM here ({exc}); --launcher.backend "
                          "local runs the jobs on this machine") from None
    params: dict[str, Any] = {"name": f"stealbench-{grid.name}", "timeout_min": options.timeout_min,
                              "cpus_per_task": options.cpus_per_task}
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if options.backend == "slurm":
        if options.partition is not None:
            params["slurm_partition"] = options.partition
        if options.array_parallelism is not None:
            params["slurm_array_parallelism"] = options.array_parallelism
    executor.update_parameters(**params)
    return executor, folder


def job_error(job, exc: BaseException) -> str:
    """A failed job -> one line: its id, the error (the traceback's last line) and where its stderr is."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line)]
    what = errors[-1] if errors else (lines[0] if lines else type(exc).__name__)
    return f"job {job.job_id} failed: {what} (stderr {job.paths.stderr})"


def _outcome(job) -> tuple[str, str]:
    try:
        outcome, message = job.result()
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError, or the job's own
        return "failed", job_error(job, exc)
    where = f"job {job.job_id}" + (f", stderr {job.paths.stderr}" if outcome == "failed" else "")
    return outcome, f"{message} ({where})"


def run_launched(grid: Grid, todo: list[GridRun], report, out, options: LauncherOptions, *,
                 fail_fast: bool = False) -> None:
    """Run `todo` as submitit jobs, filling `report` (a grid_runner.GridReport)."""
    executor, folder = make_executor(grid, options)
    threads = options.cpus_per_task
    state = Jobs(grid, todo, report, out, fail_fast, threads)  # the counting and the per-run lines of --jobs
    pending: list[tuple[int, GridRun]] = []
    for i, run in enumerate(todo, start=1):
        why = taken_by_another(run.folder(grid.output_dir))
        if why is not None:  # another runner has it: no job for it
            state.finish(run, "busy", f"skipped: {why}")
        else:
            pending.append((i, run))
    at_once = len(pending) if options.backend == "slurm" else (
        options.array_parallelism or max(1, available_cores() // threads))
    out.info(f"grid: submitting {len(pending)} jobs to {options.backend}"
             + (f" (at most {at_once} at a time)" if at_once < len(pending) else "")
             + f", {threads} thread{'s' if threads > 1 else ''} each; job files in {out.escape(folder)}, each "
             f"run's output in {out.escape(Path(grid.output_dir) / '.logs')}")
    cwd = os.getcwd()
    jobs: dict[str, tuple[Any, GridRun]] = {}
    try:
        delay = POLL_FIRST_S
        while pending or jobs:
            if pending and not state.stop and len(jobs) < at_once:  # slurm: one array of all; local: waves
                batch = [pending.pop(0) for _ in range(min(at_once - len(jobs), len(pending)))]
                with executor.batch():
                    submitted = [executor.submit(run_cell, run.args, grid.output_dir, run.name, threads, cwd)
                                 for _, run in batch]
                for (i, run), job in zip(batch, submitted):
                    jobs[run.name] = (job, run)
                    state.running[run.name] = job
                    out.info(f"[bold]grid run {i}/{state.total}[/] submitted: {out.escape(run.name)} "
                             f"(job {job.job_id})")
            if state.stop:
                pending.clear()
            finished = [name for name, (job, _) in jobs.items() if job.done()]
            for name in finished:
                job, run = jobs.pop(name)
                state.running.pop(name, None)
                outcome, message = _outcome(job)
                if outcome == "interrupted":  # cancelled or preempted out there: the grid is not complete
                    report.interrupted = True
                    report.interrupt_code = 143
                state.finish(run, outcome, message)
                if outcome == "failed" and fail_fast and not state.stop:
                    state.stop = True
                    _cancel(jobs, out, "--fail_fast")
            if pending or jobs:
                delay = POLL_FIRST_S if finished else min(delay * 2, POLL_MAX_S)
                time.sleep(delay)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        report.interrupted = True
        report.interrupt_code = exit_code(exc) or 130
        _cancel(jobs, out, str(exc) or "Ctrl-C")
    if report.interrupted:
        out.info("grid interrupted; run the same command again to resume")


def _cancel(jobs: dict[str, tuple[Any, GridRun]], out, why: str) -> None:
    """Cancel every job not finished (a cell they interrupt is resumed by the next invocation)."""
    ids = []
    for job, _ in jobs.values():
        try:
            job.cancel(check=False)
            ids.append(str(job.job_id))
        except Exception as exc:  # noqa: BLE001 - one job that cannot be cancelled must not keep the others
            out.info(f"grid: could not cancel job {job.job_id}: {out.escape(exc)}")
    if ids:
        out.info(f"grid: {out.escape(why)}: cancelled {len(ids)} submitted jobs ({', '.join(ids)})")


__all__ = ["BACKENDS", "INSTALL_HINT", "LAUNCHERS", "LauncherOptions", "add_launcher_options", "launcher_options",
           "make_executor", "require_submitit", "run_launched"]
