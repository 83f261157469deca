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



class ImpersonatingAttack(Attack):
    """Logs lines dressed as the framework's (a fake round line, rich markup, a carriage return) and a markup
    closer that rich cannot parse; checkpoints an untrained surrogate without a query."""

    FAKE = ("round  9  queries   3200/3200    surrogate acc 0.9990  fidelity 0.9990\n"
            "[bold green]results[/]: all stolen [/] \r\x1b[2Kround 10")

    def run(self, ctx: AttackContext) -> nn.Module:
        ctx.log(self.FAKE)
        surrogate = ctx.new_surrogate()
        ctx.checkpoint(surrogate, 1, True)
        return surrogate


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


# ------------------------------------------------------------------------------------------------ issue 22: the record
def _channel():
    """The attacker's end of the pipe, found the way a hostile attack would: in its own process's objects."""
    from stealbench.transport import PipeChannel

    return next(obj for obj in gc.get_objects() if isinstance(obj, PipeChannel))


def _report(text: str) -> None:
    """What the attack got, for the test: written to $ADVERSARY_REPORT (these adversaries run with --sandbox off)."""
    with open(os.environ["ADVERSARY_REPORT"], "w") as fh:
        fh.write(text)


class ForgedReportAttack(Attack):
    """One query, one checkpoint, then a forged final report: measured metrics as its label mode's figures."""

    def run(self, ctx: AttackContext) -> nn.Module:
        ctx.oracle.query(ctx.pool_x[:1])
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        _channel().send_final("done", {"label_mode": {"surrogate/acc": 0.999, "surrogate/fidelity": 0.999,
                                                      "queries": 0, "label_mode/kept": 0.5},
                                       "environment": {}})
        return model


class ForgedFailureAttack(Attack):
    """Reports a failure dressed as the defense's broken rule."""

    def run(self, ctx: AttackContext) -> nn.Module:
        _channel().send_final("failed", {"type": "DefenseOutputError", "module": "stealbench.errors",
                                         "message": "defense 'none' broke rule [simplex]: it returned NaN",
                                         "details": "", "stealbench": True})
        return ctx.new_surrogate()


class ForgedLogAttack(Attack):
    """Relays log lines under the framework's own keys, then checkpoints honestly."""

    def run(self, ctx: AttackContext) -> nn.Module:
        _channel().notify("log", metrics={"surrogate/acc": 0.999, "victim/acc": 0.0, "queries": 0.0}, step=0)
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class BadRoundAttack(Attack):
    """Checkpoints with a text round, a round 0, and a round repeated after a proper round 1; writes the errors it
    got to $ADVERSARY_REPORT, one per line."""

    def run(self, ctx: AttackContext) -> nn.Module:
        model = ctx.new_surrogate()
        got = []
        for round_ in ("abc", 0, None, 1):
            if round_ is None:
                ctx.checkpoint(model, 1, True)
                continue
            try:
                _channel().call("checkpoint", state=dict(model.state_dict()), round=round_, retrained=True)
                got.append("accepted")
            except Exception as exc:  # noqa: BLE001
                got.append(f"{type(exc).__name__}: {exc}")
        _report("\n".join(got))
        return model


class GreedySeedSetAttack(Attack):
    """Asks for 50 labelled seed images per class (the whole digits pool); writes what it got to $ADVERSARY_REPORT."""

    def run(self, ctx: AttackContext) -> nn.Module:
        try:
            x, _ = ctx.seed_set(50)
            got = f"got {len(x)}"
        except Exception as exc:  # noqa: BLE001
            got = f"{type(exc).__name__}: {exc}"
        _report(got)
        x, _ = ctx.seed_set(2)
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class ThreadedAttack(Attack):
    """Four threads query at once (a thread pool is a natural way to write a fast attack)."""

    def run(self, ctx: AttackContext) -> nn.Module:
        from concurrent.futures import ThreadPoolExecutor

        sizes = [1, 2, 3, 4, 5, 6] * 2  # 42 queries; each reply must be its own request's
        batches = ctx.pool_x[:sum(sizes)].split(sizes)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ctx.oracle.query, batches))
        assert [len(a) for a in answers] == sizes, "replies went to the wrong thread"
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class NaNSurrogateAttack(Attack):
    """Checkpoints a surrogate whose weights are NaN."""

    def run(self, ctx: AttackContext) -> nn.Module:
        model = ctx.new_surrogate()
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        ctx.checkpoint(model, 1, True)
        return model


class SleepingAttack(Attack):
    """Never ends (and ignores SIGTERM): the run must end it."""

    def run(self, ctx: AttackContext) -> nn.Module:
        import signal
        import time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)


# ------------------------------------------------------------------------------------------------ cheating defenses
from stealbench.defenses.base import Defense  # noqa: E402


class VictimTamperer(Defense):
    """Degrades the live victim in setup(): its last layer answers zeros, so the attacker learns nothing."""

    def setup(self, context) -> None:
        with torch.no_grad():
            for p in list(context.victim.parameters())[-2:]:
                p.zero_()

    def forward(self, x, probs):
        return probs


class EvalDetector(Defense):
    """Answers the benign-user evaluation truthfully and the attacker with noise: it recognises the evaluation as
    the copy of itself that the framework used to make (a copy has another id than the instance set up)."""

    def setup(self, context) -> None:
        self._me = id(self)

    def forward(self, x, probs):
        if id(self) != self._me:
            return probs  # the evaluation: truthful
        return torch.full_like(probs, 1.0 / probs.shape[-1])  # the attacker: nothing to learn


class RaisingDefense(Defense):
    def forward(self, x, probs):
        raise RuntimeError("boom")


class TupleDefense(Defense):
    def forward(self, x, probs):
        return probs, probs


class FiveClassDefense(Defense):
    def forward(self, x, probs):
        return torch.softmax(probs[:, :5], -1)


class NaNDefense(Defense):
    def forward(self, x, probs):
        return torch.full_like(probs, float("nan"))


class SleepingDefense(Defense):
    """Never answers, and swallows whatever interrupts it, once (a `try/except BaseException` around a sleep)."""

    def __init__(self, where: str = "forward") -> None:
        super().__init__()
        self.where = where

    def _sleep(self) -> None:
        import time

        print("defense: sleeping", flush=True)
        try:
            while True:
                time.sleep(0.05)
        except BaseException:  # noqa: BLE001 - the cheat: swallow the first interruption and sleep on
            while True:
                time.sleep(0.05)

    def setup(self, context) -> None:
        if self.where == "setup":
            self._sleep()

    def forward(self, x, probs):
        if self.where == "forward" and len(x) < 100:  # the attacker's small queries, not the evaluation
            self._sleep()
        return probs
