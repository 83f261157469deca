"""Starting the attacker's process: a fresh interpreter image, forked from a clean server process.

Python's ``forkserver`` start method forks each attacker process from a small server that was itself started
with a fresh ``exec`` (not forked from the main process), so the child inherits none of the main process's
memory: no victim, no defense, no evaluation set. The server preloads torch and Lightning once, so starting an
attacker costs a fork, not an interpreter start. (Plain ``fork`` would copy the defender's memory, and would
hang in OpenMP after the parent has run parallel torch ops.)

With ``--sandbox bwrap`` the attacker is instead a fresh ``python -m stealbench.attacker.entry`` inside bubblewrap
(sandbox.py), joined to this process by one socket. Either way the process starts before the victim trains, builds
the attack from its name and options (AttackerLink.resolve) and then receives its spec (session.py).
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterable

from ..forkserver import context as _context
from ..forkserver import warm_up
from ..reproducibility import thread_counts
from ..errors import ConfigError, StealbenchError
from ..transport import decode, encode, rebuild_error
from .sandbox import bwrap_command, sandbox_env

def _plain_env() -> dict[str, str]:
    """The environment an unsandboxed attacker gets: this process's, less its secrets (W&B keys, cache folder)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "STEALBENCH_CACHE_DIR"}


class AttackerLink:
    """The defender's end of one attacker process (session.py's protocol): `start()` it early, `resolve()` the
    attack from its name and options there (the defender never imports it), then `run(spec)` hands the process
    and its connection over to the referee; `close()` ends it if it was never handed over.

    `sandbox`: "off" (a child of the fork server) or "bwrap" (sandbox.py; `hide` lists the run's folders it must not
    see, those that exist when it starts).
    """

    #: seconds the attacker's side may take to answer one handshake request (build, validate, look up names): a
    #: plugin whose import, __init__ or validate() never returns ends the run instead of hanging it
    SETUP_TIMEOUT = 600.0

    def __init__(self, sandbox: str = "off", hide: Iterable[str] = (), device: str = "cpu",
                 timeout: float | None = SETUP_TIMEOUT) -> None:
        self.sandbox, self.hide, self.device, self.timeout = sandbox, list(hide), device, timeout
        self.process = self.conn = None
        self.hidden_at_start: frozenset[str] = frozenset()

    def start(self) -> "AttackerLink":
        self.hidden_at_start = existing(self.hide)  # bwrap can hide only what exists when it starts
        if self.sandbox == "bwrap":
            self.process, self.conn = start_sandbox(self.hide, self.device)
            env = sandbox_env()
        else:
            from .session import attacker_main

            ctx = _context()
            self.conn, child = ctx.Pipe(duplex=True)
            # not daemonic: its training phases may start DDP workers (daemonic processes cannot have children); it
            # still ends with the main process (PR_SET_PDEATHSIG in attacker_main, and referee.stop)
            self.process = ctx.Process(target=attacker_main, args=(child,), name="stealbench-attacker", daemon=False)
            self.process.start()
            child.close()
            env = _plain_env()  # the child starts from the server's environment: hand it this process's, less secrets
        threads = thread_counts()  # the server's pools were sized when it started, not by set_num_threads since
        self._send({"sys_path": [os.path.abspath(p) for p in sys.path], "env": env,
                    "threads": list(threads) if threads else None})
        return self

    def resolve(self, choice: Any, limits: dict[str, int] | None = None) -> dict[str, Any]:
        """Build `choice` (an AttackChoice) on the attacker's side; with `limits` also validate it, and that attack
        is the one that runs. Returns its resolved config; ConfigError in one line when it is refused."""
        from ..defender.schema import check_attack_description

        if limits is None:
            self._send(("check", choice.as_data()))
        else:
            self._send(("attack", {"choice": choice.as_data(), "limits": dict(limits)}))
        return check_attack_description(self._answer("resolved", f"building attack {choice.key!r}"), choice.key)

    def label_mode(self, choice: Any, num_classes: int, budget: int | None = None) -> dict[str, Any]:
        """Build `choice` (a LabelModeChoice) on the attacker's side: the mode the run uses. Returns its account
        (defender/schema.check_label_mode: {key, source, plugin, answers, effective_budget}), the attacker's word
        only; ConfigError in one line when it is refused."""
        from ..defender.schema import check_label_mode

        self._send(("label_mode", {"choice": choice.as_data(), "num_classes": int(num_classes),
                                   "budget": None if budget is None else int(budget)}))
        return check_label_mode(self._answer("label_mode", f"building label mode {choice.key!r}"), choice.key, budget)

    def help(self, key: str) -> str:
        self._send(("help", {"key": key}))
        return str(self._answer("help", f"describing attack {key!r}").get("text", ""))

    def unknown(self, keys: list[str]) -> list[str]:
        """The registry's message for each of `keys` that no attack plugin registered (nothing is built)."""
        self._send(("names", {"keys": list(keys)}))
        return [str(e) for e in self._answer("names", "looking up attack names").get("errors", [])]

    def run(self, spec: Any):
        """Send the run's spec; returns (process, connection), now the referee's to serve and stop."""
        self._send(("spec", {}))
        try:
            self.conn.send_bytes(pickle.dumps(spec))  # defender -> attacker only: the defender never unpickles
        except (OSError, EOFError) as exc:
            raise StealbenchError(f"the attacker's process is gone ({exc})") from None
        handed, self.process = (self.process, self.conn), None
        return handed

    def close(self, timeout: float = 1.0) -> None:
        from ..defender.referee import stop

        if self.process is not None:
            stop(self.process, self.conn, timeout=timeout)
            self.process = None

    def _send(self, message: Any) -> None:
        try:
            self.conn.send_bytes(encode(message))
        except (OSError, EOFError) as exc:
            raise StealbenchError(f"the attacker's process is gone ({exc})") from None

    def _answer(self, expected: str, doing: str) -> dict[str, Any]:
        try:
            if self.timeout is not None and not self.conn.poll(self.timeout):
                raise StealbenchError(f"the attacker's process did not answer within {self.timeout:g} s while "
                                      f"{doing} (its import, __init__ or validate() hangs?); raise "
                                      "--timeouts.attack_setup if it is only slow")
            kind, payload = decode(self.conn.recv_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            code = getattr(self.process, "exitcode", None)
            raise StealbenchError(f"the attacker's process ended while {doing} (exit code {code})") from None
        payload = payload if isinstance(payload, dict) else {}
        if kind == "failed":
            if payload.get("stealbench"):
                raise rebuild_error(payload)
            raise ConfigError(f"{doing}: {payload.get('type')}: {str(payload.get('message')).splitlines()[0]}")
        if kind != expected:
            raise StealbenchError(f"the attacker's process answered {kind!r} while {doing}")
        return payload


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




def existing(paths: Iterable[str | Path]) -> frozenset[str]:
    return frozenset(str(Path(p).resolve()) for p in paths if Path(p).exists())


#: the attacker-side process that checked `fit`'s attack options, kept for the run itself (see keep_spare)
_SPARE: list[AttackerLink] = []


def keep_spare(link: AttackerLink) -> None:
    """Keep `link` (its process has built the run's label mode and attack to check their options) for the run of
    this same command, which then need not start and wait for a second attacker process (the sandboxed one
    imports torch and Lightning: seconds). Ended at exit if the run never takes it."""
    close_spare()
    _SPARE.append(link)


def take_spare(sandbox: str, hide: Iterable[str | Path], device: str, timeout: float | None) -> AttackerLink | None:
    """The kept link when it was started as the run would start its own: the same sandbox and device, and the
    same run folders hidden (a folder created since it started would be visible in it); else None (and it ends).
    Its process may have built other label modes and attacks before: the last ones built are those that run."""
    if not _SPARE:
        return None
    link = _SPARE.pop()
    hide = list(hide)
    alive = link.process is not None and link.process.exitcode is None
    if alive and (link.sandbox, link.device) == (sandbox, device) and (
            sandbox != "bwrap" or link.hidden_at_start == existing(hide)):
        link.hide, link.timeout = hide, timeout
        return link
    link.close()
    return None


def close_spare() -> None:
    while _SPARE:
        _SPARE.pop().close()


atexit.register(close_spare)  # a kept process the run never took ends with this one


def ask_attacker(sandbox: str, hide: Iterable[str], ask, timeout: float | None = AttackerLink.SETUP_TIMEOUT):
    """`ask(link)` of a throwaway attacker-side process (option checks, `--attack.help`), ended afterwards;
    `timeout`: seconds per answer (--timeouts.attack_setup)."""
    link = AttackerLink(sandbox, hide, timeout=timeout).start()
    try:
        return ask(link)
    finally:
        link.close()


__all__ = ["AttackerLink", "SandboxedProcess", "ask_attacker", "close_spare", "keep_spare", "start_sandbox",
           "take_spare", "warm_up"]
