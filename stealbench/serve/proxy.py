"""`stealbench serve --upstream URL --defense KEY`: a defense in front of an existing V2 endpoint.

The proxy has no victim: each batch goes to the upstream endpoint (on the proxy's own upstream account), and the
defense transforms the probabilities it returns, under the same run-time rules as in a run
(`defender.guard.guarded_answer`). Only defenses that need no setup (no victim, no training data) can run here.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch
from torch import Tensor

from ..defender.guard import check_probabilities, guarded_answer
from ..defenses.base import Defense
from ..errors import ConfigError, EndpointError
from .client import V2Client
from .remote_oracle import DEFAULT_BATCH


def upstream_answerer(args: Any, defense: Defense, who: str) -> tuple[Callable[[Defense], Callable], tuple, int]:
    """(defense -> answerer, input shape, classes) for the upstream endpoint; fails now if it is unreachable."""
    if type(defense).setup is not Defense.setup:
        raise ConfigError(f"defense {who} has a setup() (it needs the victim or training data): it cannot run in "
                          "front of an --upstream endpoint; serve the victim itself instead")
    client = V2Client(args.upstream, args.upstream_model, api_key=args.upstream_key, timeout=args.upstream_timeout)
    metadata = client.metadata()
    try:
        input_shape = tuple(metadata["inputs"][0]["shape"][1:])
        num_classes = int(metadata["outputs"][0]["shape"][-1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise EndpointError(f"the endpoint {args.upstream} gives no input/output shapes in its metadata") from None
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape) or num_classes < 1:
        raise EndpointError(f"the endpoint {args.upstream} serves inputs {list(input_shape)} and {num_classes} "
                            "classes; a proxy needs image inputs [B, C, H, W] and a known class count")
    limit = (metadata.get("parameters") or {}).get("max_batch")
    batch = limit if isinstance(limit, int) and limit >= 1 else DEFAULT_BATCH
    lock = threading.Lock()  # one httpx client, one request at a time
    where = f"the upstream endpoint {args.upstream}"

    def make_answerer(defense_copy: Defense) -> Callable[[Tensor], tuple[Tensor, Tensor, None]]:
        @torch.no_grad()
        def answer(x: Tensor) -> tuple[Tensor, Tensor, None]:
            parts = []
            with lock:
                for chunk in x.split(batch):
                    probs, _ = client.infer(chunk)
                    if probs.shape != (len(chunk), num_classes):
                        raise EndpointError(f"{where} answered with shape {tuple(probs.shape)}")
                    check_probabilities(probs, torch.empty(len(chunk), num_classes), where)
                    parts.append(probs)
            clean = torch.cat(parts)
            return clean, guarded_answer(defense_copy, x, clean, who), None

        return answer

    return make_answerer, input_shape, num_classes
