"""The oracle of a `fit --oracle.url` run: the attacker's queries go to a V2 endpoint, not to a local victim.

:class:`RemoteOracle` has the interface the runner and the referee use of :class:`~stealbench.defender.oracle.Oracle`
(query, used/remaining/budget, stats, recovery, price), so every attack runs unchanged. The budget is enforced
here, exactly, before anything is sent; the server's echoed `queries_used` is checked against this side's count.
The referee's fidelity reference is the endpoint's answers on the evaluation set, asked on an account of its own
(:func:`reference_answers`), outside the attacker's budget. Clean (undefended) answers are never visible through
an endpoint: the defense's distortion figures and the recovery audit are absent from such runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..attacks.base import QueryCounter
from ..config import OracleConfig
from ..defender.guard import check_probabilities
from ..defender.oracle import validate_images
from ..errors import BudgetExceededError, EndpointError
from .client import V2Client

#: most images per request when the endpoint does not say its limit (its metadata's parameters.max_batch)
DEFAULT_BATCH = 256


def _client(cfg: OracleConfig, key: str | None, account: str) -> V2Client:
    return V2Client(cfg.url, cfg.model_name, api_key=key, account=account, timeout=cfg.timeout, retries=cfg.retries,
                    binary=cfg.binary)


def _batch_size(metadata: dict[str, Any]) -> int:
    limit = (metadata.get("parameters") or {}).get("max_batch") if isinstance(metadata, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else DEFAULT_BATCH


def check_metadata(metadata: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, where: str) -> None:
    """The endpoint must take this data set's images and answer its classes; EndpointError otherwise."""
    try:
        shape = list(metadata["inputs"][0]["shape"])
        classes = metadata["outputs"][0]["shape"][-1]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{where} gives no input/output shapes in its model metadata") from None
    if shape[1:] != list(input_shape) or (isinstance(classes, int) and classes not in (-1, num_classes)):
        raise EndpointError(f"{where} takes inputs shaped {shape} with {classes} classes; this run's data set has "
                            f"images {list(input_shape)} and {num_classes} classes (serve and fit the same --data)")


class RemoteOracle(QueryCounter):
    def __init__(self, cfg: OracleConfig, *, budget: int, input_shape: tuple[int, int, int], num_classes: int) -> None:
        self.budget = int(budget)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self._used = 0
        self._cfg = cfg
        self._client = _client(cfg, cfg.api_key, cfg.account)
        self._where = f"the endpoint {cfg.url} (model {cfg.model_name!r})"
        metadata = self._client.metadata()  # unreachable, wrong model: the run fails now, before the attack
        check_metadata(metadata, self.input_shape, num_classes, self._where)
        self.batch_size = _batch_size(metadata)
        self._server_base: int | None = None  # the account's queries_used on the server before this run
        self.resynced = 0  # requests after which the server's count was taken over (a retried request)

    def query(self, x: Tensor) -> Tensor:
        validate_images(x, self.input_shape)
        n = len(x)
        if n > self.remaining:
            raise BudgetExceededError(
                f"a query of {n} images exceeds the remaining budget ({self.remaining} of {self.budget} left); "
                "an attack must check oracle.remaining and query at most that many")
        if n == 0:
            return torch.empty(0, self.num_classes, device=x.device)
        parts = []
        for chunk in x.detach().cpu().split(self.batch_size):
            binary = self._client.binary
            probs, params = self._client.infer(chunk)
            if binary and not self._client.binary:
                from .. import console

                console.info(f"oracle: {console.escape(self._where)} did not take a binary request; JSON from now on "
                             f"({console.escape(self._client.fallback or '')})")
            if probs.shape != (len(chunk), self.num_classes):
                raise EndpointError(f"{self._where} answered {len(chunk)} images with shape {tuple(probs.shape)}, "
                                    f"expected ({len(chunk)}, {self.num_classes})")
            check_probabilities(probs, torch.empty(len(chunk), self.num_classes), self._where)
            self._used += len(chunk)
            self._check_count(params.get("queries_used"))
            parts.append(probs)
        return torch.cat(parts).to(x.device)

    def _check_count(self, server_used: Any) -> None:
        if not isinstance(server_used, int) or isinstance(server_used, bool):
            return  # the endpoint does not echo counts: this side's count is the only one
        if self._server_base is None or self._client.last_attempts > 1:
            # first answer, or a retried request the server may have counted twice: take over its count
            self.resynced += self._server_base is not None
            self._server_base = server_used - self._used
        elif server_used - self._server_base != self._used:
            raise EndpointError(f"{self._where} counts {server_used - self._server_base} queries for this run, "
                                f"this side counts {self._used}: another client shares account "
                                f"{self._cfg.account!r}, or the endpoint counts differently")

    def record(self) -> dict[str, Any]:
        """results.json's `endpoint`: URL, model, accounts (no keys), and the server's count before the run."""
        return {**self._cfg.record(), "queries_used_before": self._server_base, "resynced": self.resynced,
                "batch_size": self.batch_size, "binary": self._client.binary, "binary_fallback": self._client.fallback}

    # -- what the local oracle measures from clean answers: not observable through an endpoint --------------------
    def stats(self) -> dict[str, float]:
        return {}

    def recovery(self) -> dict[str, float]:
        return {}

    def report_recovered(self, index: Tensor, recovered: Tensor) -> None:
        """The recovery audit needs the clean answers, which an endpoint never shows: nothing to score."""

    def price(self, state_size: int | None) -> dict[str, Any]:
        return {"defense/cost_ratio": None, "defense/state_size": None}

    def close(self) -> None:
        self._client.close()


def reference_answers(cfg: OracleConfig, x: Tensor, num_classes: int) -> Tensor:
    """The endpoint's answers (N, K) on the evaluation set `x`, on the referee's own account: the fidelity
    reference of a remote run (the released answers: the clean ones are not observable)."""
    account = cfg.referee_account or f"{cfg.account}-referee"
    with _client(cfg, cfg.referee_key, account) as client:
        batch = _batch_size(client.metadata())
        parts = []
        for chunk in x.detach().cpu().split(batch):
            probs, _ = client.infer(chunk)
            if probs.shape != (len(chunk), num_classes):
                raise EndpointError(f"the endpoint {cfg.url} answered the evaluation set with shape "
                                    f"{tuple(probs.shape)}, expected ({len(chunk)}, {num_classes})")
            parts.append(probs)
    return torch.cat(parts) if parts else torch.empty(0, num_classes)


def connect(cfg: OracleConfig, budget: int, data: Any, eval_x: Tensor) -> tuple[RemoteOracle, Tensor]:
    """The attacker's oracle at the endpoint and the referee's answers on the evaluation set `eval_x`."""
    from .. import console

    console.info(f"oracle: the V2 endpoint {console.escape(cfg.url)} (model {console.escape(cfg.model_name)}, "
                 f"account {console.escape(cfg.account)}, {'binary tensors' if cfg.binary else 'JSON tensors'})")
    oracle = RemoteOracle(cfg, budget=budget, input_shape=tuple(data.input_shape), num_classes=data.num_classes)
    try:
        return oracle, reference_answers(cfg, eval_x, data.num_classes)
    except BaseException:
        oracle.close()
        raise
