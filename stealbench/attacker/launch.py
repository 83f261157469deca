"""Starting the attacker's process: a fresh interpreter image, forked from a clean server process.

Python's ``forkserver`` start method forks each attacker process from a small server that was itself started
with a fresh ``exec`` (not forked from the main process), so the child inherits none of the main process's
memory: no victim, no defense, no evaluation set. The server preloads torch and Lightning once, so starting an
attacker costs a fork, not an interpreter start. (Plain ``fork`` would copy the defender's memory, and would
hang in OpenMP after the parent has run parallel torch ops.)

With ``--sandbox bwrap`` the attacker is instead a fresh ``python -m stealbench.attacker.entry`` inside bubblewrap
(sandbox.py), joined to this process by one socket; its spec goes over that socket as the first messages.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any, Iterable

from ..forkserver import context as _context
from ..forkserver import warm_up
from ..reproducibility import thread_counts
from ..transport import encode
from .sandbox import bwrap_command, sandbox_env

def _plain_env() -> dict[str, str]:
    """The environment an unsandboxed attacker gets: this process's, less its secrets (W&B keys, cache folder)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "STEALBENCH_CACHE_DIR"}


def start_attacker(spec: Any, sandbox: str = "off", hide: Iterable[str] = (), started=None):
    """Start the attacker's process for `spec` (an AttackerSpec); returns (process, connection to it).

    `sandbox`: "off" (fork server) or "bwrap" (sandbox.py; `hide` lists the run's folders it must not see);
    `started`: a sandbox from `start_sandbox`, started earlier, that waits for its spec.
    """
    # the child starts from the server's environment: hand it this process's (tests and grids change it)
    spec.sys_path = [os.path.abspath(p) for p in sys.path]
    # and its torch thread counts: the server's pools were sized when it started, not by set_num_threads since
    spec.threads = thread_counts()
    if sandbox == "bwrap":
        return _send_spec(spec, started or start_sandbox(hide, spec.device))
    spec.env = _plain_env()
    ctx = _context()
    parent_end, child_end = ctx.Pipe(duplex=True)
    from .process import attacker_main

    # not daemonic: its training phases may start DDP workers (daemonic processes cannot have children); it still
    # ends with the main process (PR_SET_PDEATHSIG in attacker_main, and referee.stop)
    process = ctx.Process(target=attacker_main, args=(child_end, spec), name="stealbench-attacker", daemon=False)
    process.start()
    child_end.close()
    return process, parent_end


class SandboxedProcess:
    """The bwrap process, with the part of multiprocessing.Process's interface that referee.serve/stop use.

    It leads its own process group; terminate/kill signal the whole group, and bwrap (--die-with-parent, PID
    namespace) takes every process inside the sandbox down with it.
    """

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def start_sandbox(hide: Iterable[str], device: str,
                  module: str = "stealbench.attacker.entry") -> tuple[SandboxedProcess, Connection]:
    """Start the sandboxed attacker's process now: it imports torch and Lightning (seconds) while the defender
    trains the victim, then waits for its spec (start_attacker). `module`: another sealed entry point (the
    surrogate evaluator's)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fd = theirs.fileno()
        # the code it runs stays readable even inside a hidden folder (say, --output_dir above the virtualenv)
        keep = [os.path.abspath(p) for p in sys.path] + [sys.prefix, sys.base_prefix,
                                                          os.path.dirname(os.path.abspath(sys.executable))]
        # bwrap itself gets the whitelisted environment too: its init process (pid 1 in the sandbox) keeps the
        # environment bwrap was started with, and the attack can read /proc/1/environ
        popen = subprocess.Popen(bwrap_command(hide, keep, fd, device, module), pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=sandbox_env())
    finally:
        theirs.close()
    return SandboxedProcess(popen), Connection(ours.detach())


def _send_spec(spec: Any, started: tuple[SandboxedProcess, Connection]):
    process, conn = started
    spec.env = sandbox_env()
    try:
        conn.send_bytes(encode({"sys_path": spec.sys_path}))
        conn.send_bytes(pickle.dumps(spec))  # defender -> attacker only: the defender never unpickles
    except BaseException:
        conn.close()
        process.kill()
        process.join()
        raise
    return process, conn


__all__ = ["SandboxedProcess", "start_attacker", "start_sandbox", "warm_up"]
