"""The defender's end of the link: answers the attacker's process and evaluates the surrogates it sends.

The referee keeps the budget curve, the pool's ground truth (for choosing the labelled seed set) and the
evaluation set; the attacker's process sees only replies. Misuse by the attack (over budget, bad images, a
second seed set of another size) is answered with an error the attack may catch; a fault on this side (a
defense that breaks a rule) ends the run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..attacks.base import class_balanced_indices
from ..errors import ConfigError, DefenseOutputError, StealbenchError
from ..transport import RemoteError, decode, encode, error_payload, rebuild_error
from .oracle import Oracle

#: most labelled seed images per class an attack may ask for (Papernot et al. used 10; 150 for MNIST in total)
MAX_SEED_PER_CLASS = 50


class AttackerFailed(StealbenchError):
    """The attack raised an error in the attacker's process (its traceback is in `details`)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass
class Referee:
    oracle: Oracle
    pool_x: Tensor
    pool_truth: Tensor  # ground truth of the pool: only for choosing the seed set here
    pool_labels: Tensor | None  # labels the attacker legitimately has (a --pool_data set's own), else None
    evaluate: Callable[[nn.Module], dict[str, float]]  # surrogate -> surrogate/acc, surrogate/fidelity
    build_surrogate: Callable[[], nn.Module]
    seed_generator: torch.Generator
    on_point: Callable[[dict[str, Any]], None]
    on_log: Callable[[dict[str, float], int | None], None]
    say: Callable[[str], None]
    curve: list[dict[str, Any]] = field(default_factory=list)
    seed_set_record: dict[str, Any] | None = None
    _seed_set: dict[str, Any] | None = None

    # -- requests ---------------------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"pool_x": self.pool_x}
        if self.pool_labels is not None:
            reply["pool_labels"] = self.pool_labels
        return reply

    def query(self, x: Tensor) -> dict[str, Any]:
        answers = self.oracle.query(x)
        return {"answers": answers, "used": self.oracle.used}

    def checkpoint(self, state: dict[str, Tensor], round: int, retrained: bool) -> None:
        net = self.build_surrogate()
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError("ctx.checkpoint got a model that is not the run's surrogate architecture (build it "
                              f"with ctx.new_surrogate()): {str(exc).splitlines()[0]}") from exc
        point = {"queries": self.oracle.used, "round": int(round), **self.evaluate(net),
                 "retrained_from_scratch": bool(retrained)}
        self.curve.append(point)
        self.on_point(point)

    def seed_set(self, per_class: int) -> dict[str, Tensor]:
        if not 1 <= per_class <= MAX_SEED_PER_CLASS:
            raise ConfigError(f"ctx.seed_set(per_class) takes 1..{MAX_SEED_PER_CLASS} images per class, got "
                              f"{per_class}")
        if self._seed_set is None:
            classes = int(self.pool_truth.max()) + 1 if len(self.pool_truth) else 0
            idx = class_balanced_indices(self.pool_truth, per_class, classes, self.seed_generator)
            self._seed_set = {"per_class": per_class, "x": self.pool_x[idx], "y": self.pool_truth[idx]}
            self.seed_set_record = {
                "per_class": per_class, "size": len(idx), "source": "attacker pool",
                "labels": "pool data set's own" if self.pool_labels is not None else "victim task ground truth",
                "labels_cost_queries": False,
                "classes": torch.bincount(self.pool_truth[idx], minlength=classes).tolist(),
            }
        elif self._seed_set["per_class"] != per_class:
            raise ConfigError(f"the seed set was already drawn with {self._seed_set['per_class']} images per class; "
                              f"an attack gets one seed set per run (asked again for {per_class})")
        return {"x": self._seed_set["x"], "y": self._seed_set["y"]}

    # -- the loop ---------------------------------------------------------------------------------------------
    def serve(self, conn, process, poll_seconds: float = 0.5) -> dict[str, Any]:
        """Answer the attacker's process until it finishes; returns its final report or raises its error."""
        calls = {"hello": self.hello, "query": self.query, "checkpoint": self.checkpoint, "seed_set": self.seed_set}
        while True:
            if not conn.poll(poll_seconds):
                if not process.is_alive():
                    raise AttackerFailed(f"the attacker's process died without a word (exit code {process.exitcode})")
                continue
            try:
                kind, op, args = decode(conn.recv_bytes())
            except (EOFError, OSError) as exc:
                raise AttackerFailed(f"the attacker's process hung up (exit code {process.exitcode})") from exc
            if kind == "done":
                return args
            if kind == "failed":
                raise _attack_error(args)
            if kind == "notify":
                self._notify(op, args)
                continue
            handler = calls.get(op) if kind == "call" else None
            try:
                if handler is None:
                    raise ConfigError(f"the attacker's process sent an unknown request {kind!r}/{op!r}")
                try:
                    inspect.signature(handler).bind(**args)
                except TypeError as exc:
                    raise ConfigError(f"malformed {op!r} request from the attacker's process: {exc}") from exc
                reply = handler(**args)
            except DefenseOutputError:
                raise  # the defense broke a rule: the run stops here, whatever the attack would do about it
            except StealbenchError as exc:  # the attack's misuse (budget, images, seed set): it may handle it
                conn.send_bytes(encode(("error", error_payload(exc))))
                continue
            conn.send_bytes(encode(("reply", reply)))

    def _notify(self, op: str, args: dict[str, Any]) -> None:
        if op == "log" and isinstance(args.get("metrics"), dict):
            self.on_log(args["metrics"], args.get("step"))
        elif op == "say":  # the attack's own words: `say` prints them as plain text, attributed (console.attack_line)
            self.say(str(args.get("text", "")))
        elif op == "recovered":
            self.oracle.report_recovered(args.get("index"), args.get("recovered"))


def _attack_error(payload: dict[str, Any]) -> Exception:
    if payload.get("stealbench"):
        exc = rebuild_error(payload)
        return exc if not isinstance(exc, RemoteError) else StealbenchError(payload["message"])
    details = payload.get("details", "")
    return AttackerFailed(f"the attack raised {payload['type']}: {payload['message']} (in the attacker's process; "
                          "its traceback is in error.txt)", details)


def stop(process, conn, timeout: float = 5.0) -> None:
    """End the attacker's process: wait briefly for a clean exit, then terminate, then kill."""
    try:
        conn.close()
    except OSError:
        pass
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()


__all__ = ["AttackerFailed", "MAX_SEED_PER_CLASS", "Referee", "stop"]
