"""Attacks that cheat, for the tests that show they cannot: module-level so that a run can send them to the
attacker's process (as it does any attack)."""

from __future__ import annotations

import gc
import json
import os

import torch
from torch import nn

from stealbench.attacks.base import Attack, AttackContext


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


class SnoopingAttack(Attack):
    """Searches its whole process for the victim (a module shaped like its surrogate that it did not build) and for
    label tensors; steals the first victim-shaped module it finds; writes what it found to $SNOOP_REPORT."""

    def run(self, ctx: AttackContext) -> nn.Module:
        surrogate = ctx.new_surrogate()
        mine = {id(m) for m in surrogate.modules()}
        wanted = _shapes(surrogate)
        modules, int_tensors = [], []
        for obj in gc.get_objects():
            try:
                if isinstance(obj, nn.Module) and id(obj) not in mine and _shapes(obj) == wanted:
                    modules.append(obj)
                elif isinstance(obj, torch.Tensor) and obj.dtype == torch.int64 and obj.dim() == 1:
                    int_tensors.append([len(obj), int(obj.sum())])
            except Exception:  # noqa: BLE001 - some objects refuse inspection
                continue
        if modules:  # the cheat: the victim's weights as the surrogate's, no query needed
            surrogate.load_state_dict(modules[0].state_dict())
        with open(os.environ["SNOOP_REPORT"], "w") as fh:
            json.dump({"victim_shaped_modules": len(modules), "int64_vectors": int_tensors,
                       "pid": os.getpid()}, fh)
        ctx.checkpoint(surrogate, 1, True)
        return surrogate


class InPlaceDefenseProbe(Attack):
    """Queries a few pool images once, then checkpoints: enough to make the defense answer."""

    def run(self, ctx: AttackContext) -> nn.Module:
        ctx.oracle.query(ctx.pool_x[:8])
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class EscapingAttack(Attack):
    """Tries to get out of its process: read the victim cache and its key, the defender's /proc and environment,
    the W&B key, write into the run's folder, reach the host over the network, leave a daemon. Reports what worked
    as one log line `ESCAPE {json}` (the only channel a sealed attacker has), then checkpoints an untrained
    surrogate."""

    def __init__(self, cache_dir: str, output_dir: str, defender_pid: int, port: int, marker: str,
                 secret: str) -> None:
        self.cache_dir, self.output_dir, self.defender_pid = cache_dir, output_dir, defender_pid
        self.port, self.marker, self.secret = port, marker, secret

    def run(self, ctx: AttackContext) -> nn.Module:
        import glob
        import socket
        import subprocess

        found: dict = {"pid": os.getpid(), "ppid": os.getppid()}
        readable = []
        for path in glob.glob(os.path.join(self.cache_dir, "**"), recursive=True):
            try:
                with open(path, "rb") as fh:
                    fh.read(16)
                readable.append(os.path.relpath(path, self.cache_dir))
            except OSError:
                pass
        found["cache_files_read"] = readable
        found["proc_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        leaks = []
        for pid in {os.getppid(), self.defender_pid, *found["proc_pids"]}:
            for part in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{part}", "rb") as fh:
                        if self.secret.encode() in fh.read():
                            leaks.append(f"{pid}/{part}")
                except OSError:
                    pass
        found["proc_secret_leaks"] = leaks
        found["env_secret"] = [k for k, v in os.environ.items() if self.secret in v]
        found["env_wandb"] = sorted(k for k in os.environ if k.startswith("WANDB"))
        try:
            with open(os.path.join(self.output_dir, "pwned.txt"), "w") as fh:
                fh.write("written by the attack")
            found["wrote_output_dir"] = True
        except OSError as exc:
            found["wrote_output_dir"] = str(exc)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"hello from the attack")
            found["network"] = True
        except OSError as exc:
            found["network"] = str(exc)
        # a daemon: its own session, re-parented away from the attacker's process, sleeping under a marked name
        subprocess.Popen(["sh", "-c", f"exec sleep {self.marker}"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx.log("ESCAPE " + json.dumps(found))
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class UnpicklableHere(Attack):
    """Cannot be rebuilt in the attacker's process (as when its module is not importable there)."""

    def __init__(self) -> None:
        self.rounds = 1  # some state: pickle skips __setstate__ for an empty one

    def __setstate__(self, state):
        raise RuntimeError("this attack cannot be rebuilt in the attacker's process")

    def run(self, ctx: AttackContext) -> nn.Module:  # pragma: no cover - never gets here
        raise AssertionError("unreachable")
