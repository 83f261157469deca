"""Running a grid's runs N at a time (`stealbench grid --jobs N`), each its own `stealbench fit` process.

The machine's cores are split between the jobs (OMP_NUM_THREADS / MKL_NUM_THREADS = cores // N in each child), so
N jobs never oversubscribe it; small torch ops stall when two processes share cores with too many threads. On a
machine with GPUs, job slot k sees one of them (CUDA_VISIBLE_DEVICES, slot k on GPU k mod G): one job per device,
or several per device when N > G; a cell that asks for several devices (--trainer.devices) sees all of them. Each
child's output goes to `<output dir>/.logs/<run>.log` (interleaved lines of N runs would be unreadable); this
process prints one line per run started and finished. Runs that share a victim wait for one another on the victim
cache's lock (stealbench/victim.py), so each victim is trained once. Resume and run-folder locks are as in
grid_runner. SIGTERM or Ctrl-C reaches every running child; the grid then stops and says how to resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .grid import Grid, GridRun
from .results import RESULTS_FILE
from .rundir import is_busy, is_complete, set_aside_error, taken_by_another
from .signals import RunInterrupted, child_exit_interrupted, die_with_parent, exit_code, spawn_child

#: hidden, so that leaderboards reading the output folder never take it for a run
LOG_DIR = ".logs"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def child_env(threads: int, gpu: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where it is set, else every CUDA device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and not d.strip().startswith("-")]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: the jobs run on the CPU
        return []


def wants_several_devices(args: list[str]) -> bool:
    """Whether a cell's fit options ask for more than one device (then it must see every GPU, not one)."""
    for i, token in enumerate(args):
        name, _, value = token.partition("=")
        if name == "--trainer.devices":
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            return value.strip() not in ("1", "[0]", "auto") and value.strip() != ""
    return False


def slot_gpu(slot: int, gpus: list[str], args: list[str]) -> str | None:
    """The GPU job slot `slot` pins its cell to (None: no pinning: no GPUs, or a cell asking for several)."""
    if not gpus or wants_several_devices(args):
        return None
    return gpus[slot % len(gpus)]


class Jobs:
    """The shared state of the workers: what is left, what runs, what happened."""

    def __init__(self, grid: Grid, todo: list[GridRun], report, out, fail_fast: bool, threads: int) -> None:
        self.grid, self.pending, self.report, self.out = grid, list(todo), report, out
        self.fail_fast, self.threads, self.total = fail_fast, threads, len(todo)
        self.lock = threading.Lock()
        self.running: dict[str, subprocess.Popen] = {}
        self.stop = False
        self.started = 0
        self.finished = 0
        self.gpus: list[str] = []  # run_parallel fills it: job slot k's cells see GPU gpus[k mod G]

    def next_run(self) -> tuple[int, GridRun] | None:
        with self.lock:
            if self.stop or not self.pending:
                return None
            self.started += 1
            return self.started, self.pending.pop(0)

    def worker(self, slot: int = 0) -> None:
        while (item := self.next_run()) is not None:
            i, run = item
            folder = run.folder(self.grid.output_dir)
            why = prepare_cell(folder)
            if why is not None:
                self.finish(run, "busy", f"skipped: {why}")
                continue
            log = cell_log(self.grid.output_dir, run.name)
            self.out.info(f"[bold]grid run {i}/{self.total}[/] started: {self.out.escape(run.name)} "
                          f"(log {self.out.escape(log)})")
            t0 = time.perf_counter()
            with open(log, "wb") as sink:
                with self.lock:
                    if self.stop:
                        return
                    proc = subprocess.Popen(cell_command(run.args), stdout=sink, stderr=subprocess.STDOUT,
                                            env=child_env(self.threads, slot_gpu(slot, self.gpus, run.args)),
                                            preexec_fn=die_with_parent,
                                            process_group=0)
                    self.running[run.name] = proc
                code = proc.wait()
            with self.lock:
                self.running.pop(run.name, None)
                stopped = self.stop
            if child_exit_interrupted(code) is not None and not stopped:
                # the child alone was signalled (by a user or the OOM killer): the grid stops too
                self.interrupt(child_exit_interrupted(code))
            outcome, message = cell_outcome(code, folder, time.perf_counter() - t0, log)
            self.finish(run, outcome, message)
            if outcome == "failed" and self.fail_fast:
                self.interrupt(None)

    def finish(self, run: GridRun, outcome: str, message: str) -> None:
        """Count one run's outcome (completed, busy, failed, interrupted) and print its two lines."""
        with self.lock:
            self.finished += 1
            if outcome == "completed":
                self.report.completed.append(run.name)
            elif outcome == "busy":
                self.report.busy.append(run.name)
            elif outcome == "failed":
                self.report.failed.append((run.name, message))
            done, failed = self.finished, len(self.report.failed)
        colour = "[red]" if outcome == "failed" else ""
        self.out.info(f"{colour}grid run {self.out.escape(run.name)}[/]: {self.out.escape(message)}" if colour else
                      f"grid run {self.out.escape(run.name)}: {self.out.escape(message)}")
        self.out.info(f"grid: {done}/{self.total} done ({failed} failed), {len(self.running)} running")

    def interrupt(self, signum: int | None) -> None:
        """Stop starting runs; pass the signal on to the running ones (None: let them finish, e.g. fail_fast)."""
        with self.lock:
            self.stop = True
            if signum is not None:
                self.report.interrupted = True
                self.report.interrupt_code = 128 + int(signum)
                for proc in self.running.values():
                    try:
                        proc.send_signal(signum)
                    except ProcessLookupError:  # pragma: no cover - it just ended
                        pass


def run_parallel(grid: Grid, todo: list[GridRun], report, out, *, jobs: int, fail_fast: bool = False) -> None:
    """Run `todo` with `jobs` workers, filling `report` (a grid_runner.GridReport)."""
    threads = max(1, available_cores() // jobs)
    gpus = visible_gpus()
    on = (f", on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({-(-jobs // len(gpus))} per device at most)"
          if gpus else "")
    out.info(f"grid: {jobs} jobs at a time, {threads} thread{'s' if threads > 1 else ''} each{on}; each run's "
             f"output in {out.escape(Path(grid.output_dir) / LOG_DIR)}")
    state = Jobs(grid, todo, report, out, fail_fast, threads)
    state.gpus = gpus
    workers = [threading.Thread(target=state.worker, args=(k,), name=f"grid-job-{k}", daemon=True)
               for k in range(jobs)]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=0.2)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", None) or 2
        state.interrupt(signum)
        for w in workers:
            w.join()
        report.interrupt_code = exit_code(exc) or report.interrupt_code
    if report.interrupted:
        out.info("grid interrupted; run the same command again to resume")


# --------------------------------------------------------------------------------------- one cell, wherever it runs

def cell_command(args: list[str]) -> list[str]:
    """The process that runs one cell: `stealbench fit` with the run's arguments."""
    return [sys.executable, "-m", "stealbench", "fit", *args]


def cell_log(output_dir: str | Path, name: str) -> Path:
    """Where a cell's output goes (its parent folder made)."""
    log = Path(output_dir) / LOG_DIR / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return log


def prepare_cell(folder: Path) -> str | None:
    """Why another process has the cell (it runs or ran it), else None, an earlier attempt's error set aside."""
    why = taken_by_another(folder)
    if why is None and folder.exists():
        set_aside_error(folder)
    return why


def cell_outcome(code: int, folder: Path, elapsed: float, log: Path) -> tuple[str, str]:
    """A finished cell's `stealbench fit` exit status -> (completed|interrupted|busy|failed, message)."""
    if child_exit_interrupted(code) is not None:
        return "interrupted", f"interrupted after {elapsed:.0f}s"
    if code == 0 and is_complete(folder):
        return "completed", f"done in {elapsed:.0f}s"
    if is_busy(folder) is not None:
        return "busy", "skipped: in use by another stealbench process"
    why = (f"`stealbench fit` exited with status {code}" if code else
           f"finished without a complete {folder / RESULTS_FILE}")
    return "failed", f"{why} (log {log})"


def run_cell(args: list[str], output_dir: str, name: str, threads: int, cwd: str) -> tuple[str, str]:
    """Run one cell to its end in a process of its own, as a worker of run_parallel does; what a cluster job
    (grid_launcher.py) calls on its node. SIGTERM/Ctrl-C reach the cell and come out as an `interrupted` outcome."""
    os.chdir(cwd)  # the grid's relative paths mean what they meant where it was submitted
    folder = Path(output_dir) / name
    why = prepare_cell(folder)
    if why is not None:
        return "busy", f"skipped: {why}"
    log = cell_log(output_dir, name)
    t0 = time.perf_counter()
    with open(log, "wb") as sink:
        try:
            code = spawn_child(cell_command(args), stdout=sink, stderr=subprocess.STDOUT, env=child_env(threads))
        except RunInterrupted as exc:
            return "interrupted", f"{exc} after {time.perf_counter() - t0:.0f}s"
    return cell_outcome(code, folder, time.perf_counter() - t0, log)


__all__ = ["LOG_DIR", "available_cores", "cell_command", "cell_log", "cell_outcome", "child_env", "prepare_cell",
           "run_cell", "run_parallel", "slot_gpu", "visible_gpus"]
