"""The attacker's handles on the defender's side: the oracle and the training log, both over a Channel."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor

from ..attacks.base import QueryCounter
from ..transport import Channel


class RemoteOracle(QueryCounter):
    """The oracle as an attacker sees it: `query` sends images over the channel; counting happens over there.

    `used` mirrors the defender's count after every answer; the defender enforces the budget and validates the
    images, and its refusals (BudgetExceededError, OracleInputError) are raised here.
    """

    def __init__(self, channel: Channel, *, budget: int, input_shape: tuple[int, int, int], num_classes: int) -> None:
        self._channel = channel
        self.budget = int(budget)
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self._used = 0

    def query(self, x: Tensor) -> Tensor:
        """Released probabilities (N, K) for images x (N, C, H, W) in [0, 1], on x's device."""
        if not isinstance(x, Tensor):
            from ..errors import OracleInputError

            raise OracleInputError(f"oracle.query expects a torch.Tensor, got {type(x).__name__}")
        reply = self._channel.call("query", x=x)
        self._used = int(reply["used"])
        return reply["answers"].to(x.device)

    def report_recovered(self, index: Tensor, recovered: Tensor) -> None:
        """Send the recovered answers of audited queries to the defender's side, which scores them against the
        clean answers it kept (this side never sees those)."""
        self._channel.notify("recovered", index=index, recovered=recovered)


class RelayLogger(Logger):
    """A Lightning logger that forwards the attacker's training metrics to the run's logger on the defender's side."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    @property
    def name(self) -> str:
        return "stealbench-relay"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        plain = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        self._channel.notify("log", metrics=plain, step=step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The run's configuration is logged once, on the defender's side."""


__all__ = ["RelayLogger", "RemoteOracle"]
