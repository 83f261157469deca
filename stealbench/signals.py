"""SIGTERM and Ctrl-C end a run as an interruption: exit 143 / 130, never a silent success.

Why a handler of our own: Lightning (2.x) installs a SIGTERM handler for the duration of ``Trainer.fit`` that only
sets ``trainer.received_sigterm``; its loops then raise ``SIGTERMException``, a ``SystemExit`` with code None, so
the process exits 0. Ctrl-C becomes ``KeyboardInterrupt``, which Lightning turns into ``sys.exit(1)``. Lightning
keeps an already installed SIGTERM handler and calls it after its own, so the handler below, which raises
:class:`RunInterrupted` (a BaseException that Lightning re-raises after its teardown), ends the run from any
phase, with the signal it got.

Child processes (``grid --subprocess``, a defender process) should die with their parent: :func:`spawn_child`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

HANDLED = (signal.SIGTERM, signal.SIGINT)
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}


class RunInterrupted(BaseException):
    """The run was stopped by a signal. BaseException: `except Exception` in plugins must not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    def describe(self) -> str:
        try:
            return _NAMES.get(signal.Signals(self.signum), signal.Signals(self.signum).name)
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def __str__(self) -> str:
        return f"interrupted by {self.describe()}"


def exit_code(exc: BaseException) -> int | None:
    """The process exit status for an interruption (130/143), None for anything else."""
    if isinstance(exc, RunInterrupted):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return None


#: seconds a run has, after SIGTERM/Ctrl-C, to unwind (record its failure, end the attacker's process) before the
#: process exits anyway: a plugin that swallows the interruption (`except BaseException: pass`) cannot keep it alive
EXIT_GRACE_SECONDS = 10.0
_watchdog: list[threading.Timer] = []


def _raise(signum, frame) -> None:
    if not _watchdog:
        timer = threading.Timer(EXIT_GRACE_SECONDS, os._exit, args=(128 + int(signum),))
        timer.daemon = True
        timer.start()
        _watchdog.append(timer)
    raise RunInterrupted(signum)


@contextmanager
def handle_signals(signals: Sequence[int] = HANDLED) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise RunInterrupted; the previous handlers come back afterwards.

    The first signal also arms a watchdog: if the block has not ended EXIT_GRACE_SECONDS later, the process exits
    with the signal's code. Outside the main thread Python cannot install handlers: the block then runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        while _watchdog:  # the block ended: the interruption was handled in time
            _watchdog.pop().cancel()


class PhaseTimeout(BaseException):
    """A phase ran past its time limit. BaseException, like RunInterrupted: `except Exception` must not hide it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise PhaseTimeout in the block once `seconds` have passed, and again every second until it ends (so a
    plugin that swallows it cannot sleep on). None, or outside the main thread: no limit (SIGALRM is the main
    thread's). Not nestable: the caller converts PhaseTimeout into an error naming the phase and the plugin."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise PhaseTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 1e-3), 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


# ------------------------------------------------------------------------------------------------ child processes

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn for subprocess: the kernel sends the child SIGTERM when its parent dies (Linux only).

    Without it a child of a killed `stealbench grid` keeps training, holding its run folder, with nobody to read
    its result.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the forwarding below still works
        pass


def spawn_child(cmd: Sequence[str], **popen_kwargs) -> int:
    """Run `cmd` to its end and return its exit status; it dies with this process and gets our SIGTERM/SIGINT.

    The child runs in its own process group, so a Ctrl-C at the terminal reaches it once, forwarded from here
    (not twice: once from the terminal and once forwarded). When this process was signalled, RunInterrupted is
    raised after the child has ended, so the caller stops too.
    """
    popen_kwargs.setdefault("preexec_fn", die_with_parent)
    popen_kwargs.setdefault("process_group", 0)
    received: list[int] = []
    proc = subprocess.Popen(list(cmd), **popen_kwargs)

    def forward(signum, frame):
        received.append(signum)
        try:
            proc.send_signal(signum)
        except ProcessLookupError:  # pragma: no cover - it just ended
            pass

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in HANDLED} if in_main else {}
    try:
        code = proc.wait()  # the forwarding handler runs while we wait; wait() resumes after it (PEP 475)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    if received:
        raise RunInterrupted(received[0])
    return code


def child_exit_interrupted(code: int) -> int | None:
    """The signal that ended a child, from its exit status (143, 130, or -15/-2 when killed), else None."""
    for s in HANDLED:
        if code in (128 + s, -s):
            return int(s)
    return None


__all__ = ["EXIT_GRACE_SECONDS", "PhaseTimeout", "RunInterrupted", "child_exit_interrupted", "deadline",
           "die_with_parent", "exit_code", "handle_signals", "spawn_child"]
