"""The defender's end of the evaluator (see process.py): start it, send the evaluation images, score checkpoints.

Started like the attacker's process: forked from the fork server (--sandbox off), or a fresh interpreter inside
bubblewrap with the same hidden folders (--sandbox bwrap). Either way it holds no victim, no labels and no pool:
only the evaluation images and the surrogate's weights, and only its outputs come back.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

import torch
from torch import Tensor

from ..errors import ConfigError, StealbenchError
from ..transport import RemoteError, decode, encode, rebuild_error


class EvaluatorFailed(StealbenchError):
    """The evaluator's process failed (the architecture would not build or run); `details` holds its traceback."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def not_the_surrogate(detail: str) -> ConfigError:
    """The error a run answers a checkpoint with whose weights do not fit the surrogate architecture (`detail`:
    the first line of what loading them raised); the conformance kit's `surrogate` rule reports the same."""
    return ConfigError("ctx.checkpoint got a model that is not the run's surrogate architecture (build it with "
                       f"ctx.new_surrogate()): {detail}")


class SurrogateEvaluator:
    """`start()` the process, `prepare(...)` it with the architecture and the evaluation images, `wait_ready()`,
    then `outputs(state)` per checkpoint; `close()` ends it."""

    def __init__(self, sandbox: str, hide: Iterable[str] = (), device: str = "cpu") -> None:
        self.sandbox, self.hide, self.device = sandbox, list(hide), device
        self.process = self.conn = None
        self.rows = 0

    def start(self) -> "SurrogateEvaluator":
        from ..attacker.launch import _plain_env, start_sandbox
        from ..forkserver import context
        from ..reproducibility import thread_counts
        from ..attacker.sandbox import sandbox_env

        if self.sandbox == "bwrap":
            self.process, self.conn = start_sandbox(self.hide, self.device, module="stealbench.evaluator.entry")
            env = sandbox_env()
        else:
            from .process import evaluator_main

            ctx = context()
            self.conn, child = ctx.Pipe(duplex=True)
            self.process = ctx.Process(target=evaluator_main, args=(child,), name="stealbench-evaluator",
                                       daemon=True)
            self.process.start()
            child.close()
            env = _plain_env()
        threads = thread_counts()
        self._send({"sys_path": [os.path.abspath(p) for p in sys.path], "env": env,
                    "threads": list(threads) if threads else None})
        return self

    def prepare(self, arch: str, *, num_classes: int, input_shape: tuple[int, int, int], mean, std,
                eval_x: Tensor) -> None:
        """Send the architecture and the images (the process builds the net while the defender goes on)."""
        self.arch, self.rows, self.num_classes = arch, len(eval_x), num_classes
        self._send({"arch": arch, "num_classes": num_classes, "input_shape": list(input_shape), "mean": list(mean),
                    "std": list(std), "pretrained": False,  # the weights come with every checkpoint
                    "device": self.device, "eval_x": eval_x})

    def wait_ready(self) -> None:
        """Raises ConfigError naming the architecture when it did not build."""
        kind, payload = self._receive()
        if kind == "failed":
            raise ConfigError(f"--surrogate.arch {self.arch!r} does not build: {payload.get('type')}: "
                              f"{payload.get('message')}")
        if kind != "ready":
            raise EvaluatorFailed(f"the evaluator answered {kind!r} instead of 'ready'")

    def outputs(self, state: dict[str, Tensor]) -> Tensor:
        """The surrogate's softmax outputs on the evaluation images for these weights.

        ConfigError when the weights do not fit the architecture (the attack's mistake; it may catch it)."""
        self._send(("state", state))
        kind, payload = self._receive()
        if kind == "error":
            raise not_the_surrogate(str(rebuild_error(payload)).splitlines()[0])
        if kind == "failed":
            raise EvaluatorFailed(f"the surrogate failed on the evaluation set: {payload.get('type')}: "
                                  f"{payload.get('message')}", payload.get("details", ""))
        probs = payload.get("probs") if kind == "probs" and isinstance(payload, dict) else None
        if not (isinstance(probs, Tensor) and probs.shape == (self.rows, self.num_classes)
                and probs.is_floating_point()):
            shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise EvaluatorFailed(f"the surrogate's outputs on the evaluation set are {shape}, expected "
                                  f"({self.rows}, {self.num_classes}) probabilities")
        return probs.float()

    def close(self, timeout: float = 1.0) -> None:
        from ..defender.referee import stop

        if self.process is not None:
            stop(self.process, self.conn, timeout=timeout)
            self.process = None

    # -- the link -----------------------------------------------------------------------------------------------
    def _send(self, message: Any) -> None:
        try:
            self.conn.send_bytes(encode(message))
        except (OSError, EOFError) as exc:
            raise EvaluatorFailed(f"the evaluator's process is gone ({exc})") from exc

    def _receive(self) -> tuple[str, Any]:
        try:
            message = decode(self.conn.recv_bytes())
        except (OSError, EOFError) as exc:
            code = getattr(self.process, "exitcode", None)
            raise EvaluatorFailed(f"the evaluator's process died (exit code {code})") from exc
        except RemoteError as exc:
            raise EvaluatorFailed(str(exc)) from None
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[0], str)):
            raise EvaluatorFailed("the evaluator sent a malformed message")
        return message[0], message[1] if isinstance(message[1], dict) else {}


__all__ = ["EvaluatorFailed", "SurrogateEvaluator"]
