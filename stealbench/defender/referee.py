"""The defender's end of the link: answers the attacker's process and evaluates the surrogates it sends.

The referee keeps the budget curve, the pool's ground truth (for choosing the labelled seed set) and the
evaluation set; the attacker's process sees only replies. Misuse by the attack (over budget, bad images, a
second seed set of another size) is answered with an error the attack may catch; a fault on this side (a
defense that breaks a rule) ends the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..attacks.base import class_balanced_indices
from ..errors import (BudgetExceededError, ConfigError, DefenseOutputError, EndpointError, OracleInputError,
                      ProtocolError, StealbenchError)
from ..signals import PhaseTimeout, deadline
from ..transport import RemoteError, decode, encode, error_payload, rebuild_error
from . import schema
from .oracle import Oracle

#: most labelled seed images per class an attack may ask for (Papernot et al. used 10; 150 for MNIST in total)
MAX_SEED_PER_CLASS = 50
#: ... and at most this share of the pool in all: true labels for free must stay a seed, not the pool (on the
#: 451-image digits pool a quarter is 11 per class; the built-in attacks' default of 10 per class fits)
MAX_SEED_SHARE = 0.25
#: errors an attack may legitimately pass on from its own side (its misuse, answered by the defender); any other
#: stealbench type in its failure report (a DefenseOutputError, say) would blame another component: refused
_ATTACK_ERRORS = (BudgetExceededError, OracleInputError, ConfigError, schema.ProtocolError)


class AttackerFailed(StealbenchError):
    """The attack raised an error in the attacker's process (its traceback is in `details`), or broke the
    protocol: the run ends, attributed to the attack."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def seed_set_cap(pool_size: int, classes: int) -> int:
    """Most seed images per class a run on this pool may hand out (at least 1)."""
    share = int(pool_size * MAX_SEED_SHARE) // max(classes, 1)
    return max(1, min(MAX_SEED_PER_CLASS, share))


@dataclass
class Referee:
    oracle: Oracle
    pool_x: Tensor
    pool_truth: Tensor  # ground truth of the pool: only for choosing the seed set here
    pool_labels: Tensor | None  # labels the attacker legitimately has (a --pool_data set's own), else None
    #: the surrogate's weights -> surrogate/acc, surrogate/fidelity (scored from the outputs of the evaluator's
    #: process, stealbench.evaluator: the surrogate's code never runs beside the victim); ConfigError when the
    #: weights do not fit the run's surrogate architecture
    evaluate: Callable[[dict[str, Tensor]], dict[str, float]]
    seed_generator: torch.Generator
    on_point: Callable[[dict[str, Any]], None]
    on_log: Callable[[dict[str, float], int | None], None]
    say: Callable[[str], None]
    attack_name: str = "the attack"  # how errors name the attack: 'KEY' (plugin SOURCE)
    defense_name: str = "the defense"
    answer_timeout: float | None = None  # seconds this side may take to answer one request
    curve: list[dict[str, Any]] = field(default_factory=list)
    seed_set_record: dict[str, Any] | None = None
    #: what the attacker's side spent (attacker_compute.compute_record), set when the attack phase ends
    compute: dict[str, Any] | None = None
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
        if self.curve and round <= self.curve[-1]["round"]:  # the kit's rule `rounds`, kept in a run too
            raise ProtocolError(f"ctx.checkpoint: round {round} after round {self.curve[-1]['round']}; rounds "
                                "count from 1 and increase with every checkpoint")
        point = {"queries": self.oracle.used, "round": int(round), **self.evaluate(state),
                 "retrained_from_scratch": bool(retrained)}
        self.curve.append(point)
        self.on_point(point)

    def seed_set(self, per_class: int) -> dict[str, Tensor]:
        classes = int(self.pool_truth.max()) + 1 if len(self.pool_truth) else 0
        cap = seed_set_cap(len(self.pool_truth), classes)
        if not 1 <= per_class <= cap:
            raise ConfigError(f"ctx.seed_set(per_class) takes 1..{cap} images per class on this pool (at most "
                              f"{MAX_SEED_PER_CLASS} per class and {MAX_SEED_SHARE:.0%} of the "
                              f"{len(self.pool_truth)}-image pool in all), got {per_class}")
        if self._seed_set is None:
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
    def serve(self, conn, process, poll_seconds: float = 0.25, timeout: float | None = None) -> dict[str, Any]:
        """Answer the attacker's process until it finishes; returns its final report or raises its error.

        Every message is checked against ``defender.schema`` first. `timeout`: seconds the attack phase may take
        (None: no limit); past it the run ends, attributed to the attack.
        """
        import time

        calls = {"hello": self.hello, "query": self.query, "checkpoint": self.checkpoint, "seed_set": self.seed_set}
        ends_at = None if timeout is None else time.monotonic() + timeout
        while True:
            if not conn.poll(poll_seconds):
                if not process.is_alive():
                    raise AttackerFailed(f"the attacker's process died without a word (exit code {process.exitcode})")
                if ends_at is not None and time.monotonic() > ends_at:
                    raise AttackerFailed(f"attack {self.attack_name} broke rule [timeout]: the attack phase took "
                                         f"longer than {timeout:g}s (timeouts.attack)")
                continue
            try:
                message = decode(conn.recv_bytes())
            except (EOFError, OSError) as exc:
                raise AttackerFailed(f"the attacker's process hung up (exit code {process.exitcode})") from exc
            except RemoteError as exc:
                raise self._fault(exc) from None
            try:
                kind, op, args = schema.check_envelope(message)
                if kind == "done":
                    return schema.check_done(args)
                if kind == "failed":
                    raise _attack_error(schema.check_failed(args), self.attack_name)
                if kind == "notify":
                    self._notify(op, schema.check_notify(op, args))
                    continue
            except (schema.ProtocolError, OracleInputError) as exc:  # one-way: no reply to carry it, the run ends
                raise self._fault(exc) from None
            try:
                handler = calls.get(op)
                with deadline(self.answer_timeout):
                    reply = handler(**schema.check_call(op, args))
            except PhaseTimeout:
                slow = f"took longer than {self.answer_timeout:g}s to answer a {op!r} request (timeouts.answer)"
                if op == "query":  # the defense answers queries; the rest is the framework's own work
                    raise DefenseOutputError(f"defense {self.defense_name} broke rule [timeout]: it {slow}") from None
                raise StealbenchError(f"the defender's side {slow}") from None
            except (DefenseOutputError, AttackerFailed, EndpointError):
                raise  # a broken rule or a failed endpoint: the run stops here, whatever the attack would do
            except StealbenchError as exc:  # the attack's misuse (budget, images, seed set): it may handle it
                conn.send_bytes(encode(("error", error_payload(exc))))
                continue
            conn.send_bytes(encode(("reply", reply)))

    def _fault(self, exc: Exception) -> AttackerFailed:
        return AttackerFailed(f"attack {self.attack_name} broke rule [protocol]: {exc}")

    def _notify(self, op: str, args: dict[str, Any]) -> None:
        if op == "log":
            # the attacker's training log lands under attack/: it cannot write the framework's keys in W&B
            metrics = schema.attack_metrics(args["metrics"])
            if metrics:
                self.on_log(metrics, args.get("step"))
        elif op == "say":  # the attack's own words: `say` prints them as plain text, attributed (console.attack_line)
            self.say(args["text"])
        elif op == "recovered":
            self.oracle.report_recovered(args["index"], args["recovered"])


def _attack_error(payload: dict[str, Any], attack_name: str = "the attack") -> Exception:
    """The attack's failure, always attributed to the attack (a forged DefenseOutputError does not blame the
    defense): its own misuse errors keep their type, anything else is AttackerFailed."""
    details = payload.get("details", "")
    if payload.get("stealbench"):
        exc = rebuild_error(payload)
        if isinstance(exc, _ATTACK_ERRORS):  # same type (callers catch it), the attack named as its source
            return type(exc)(f"attack {attack_name}: {payload['message']}")
        return AttackerFailed(f"attack {attack_name} failed: {payload['type']}: {payload['message']}", details)
    return AttackerFailed(f"attack {attack_name} raised {payload['type']}: {payload['message']} (in the attacker's "
                          "process; its traceback is in error.txt)", details)


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


__all__ = ["AttackerFailed", "MAX_SEED_PER_CLASS", "MAX_SEED_SHARE", "Referee", "seed_set_cap", "stop"]
