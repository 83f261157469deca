"""stealbench's fork server: a small process started with a fresh `exec` that preloads torch, Lightning and the
attacker's code once; attacker processes and data-parallel workers fork from it, so they start in a fork, not an
interpreter start, and inherit none of the main process's memory (no victim, no defense, no evaluation set).

Its own module, below both the attacker's launcher and distributed training, which both start processes from it.
"""

from __future__ import annotations

import multiprocessing

#: what the server imports before its first fork (by name: importing it here would pull the attacker's side in)
PRELOAD = ["stealbench.attacker.process"]


def context():
    """The multiprocessing context that forks from the server (spawn where a platform has no fork server)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # no forkserver on this platform: a fresh interpreter each time


def warm_up() -> None:
    """Start the server now (its imports overlap the main process's own), instead of at the first attack."""
    if context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


__all__ = ["PRELOAD", "context", "warm_up"]
