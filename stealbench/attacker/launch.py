"""Starting the attacker's process: a fresh interpreter image, forked from a clean server process.

Python's ``forkserver`` start method forks each attacker process from a small server that was itself started
with a fresh ``exec`` (not forked from the main process), so the child inherits none of the main process's
memory: no victim, no defense, no evaluation set. The server preloads torch and Lightning once, so starting an
attacker costs a fork, not an interpreter start. (Plain ``fork`` would copy the defender's memory, and would
hang in OpenMP after the parent has run parallel torch ops.)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

from ..reproducibility import thread_counts

_PRELOAD = ["stealbench.attacker.process"]


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # no forkserver on this platform: a fresh interpreter each time


def warm_up() -> None:
    """Start the server now (its imports overlap the main process's own), instead of at the first attack."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def start_attacker(spec: Any):
    """Start the attacker's process for `spec` (an AttackerSpec); returns (process, connection to it)."""
    ctx = _context()
    parent_end, child_end = ctx.Pipe(duplex=True)
    # the child starts from the server's environment: hand it this process's (tests and grids change it)
    spec.env = dict(os.environ)
    spec.sys_path = list(sys.path)
    # and its torch thread counts: the server's pools were sized when it started, not by set_num_threads since
    spec.threads = thread_counts()
    from .process import attacker_main

    # not daemonic: its training phases may start DDP workers (daemonic processes cannot have children); it still
    # ends with the main process (PR_SET_PDEATHSIG in attacker_main, and referee.stop)
    process = ctx.Process(target=attacker_main, args=(child_end, spec), name="stealbench-attacker", daemon=False)
    process.start()
    child_end.close()
    return process, parent_end


__all__ = ["start_attacker", "warm_up"]
