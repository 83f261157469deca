"""A defense's price in serving time: the oracle's clock around the victim's forward pass and the defense's.

Every batch the oracle answers (the attacker's queries and the benign users' mixed in) is timed twice, in the same
run, on the same device: the victim (`victim(x)` and its softmax) and the defense (`defense(x, probs)` alone, not
the framework's copies and checks around it). `defense/cost_ratio` = defense time / victim time: what the defense
adds to the cost of answering a query, in units of the victim itself. On an accelerator the clock synchronises the
device before reading the time, so queued kernels are counted where they run.

results.json's `price` section (`price_record`) holds the ratio, `defense/state_size` (the defense's
`state_size()`: centroids, stored queries; 0 for a stateless defense, null where a stateful one does not say) and
the seconds and batches it rests on. Timings differ from run to run, so they live there, never among the metrics
that a repeated run must reproduce exactly.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from .. import console
from ..results import PRICE_KEYS


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "xpu" and hasattr(torch, "xpu"):
        torch.xpu.synchronize(device)


class ServingClock:
    """Accumulated seconds of the victim's and the defense's forward passes over the answered batches."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = {"victim": 0.0, "defense": 0.0}
        self.batches = 0
        self.rows = 0

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        """Time the block as `part` ("victim" or "defense"); an exception leaves the totals as they were."""
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        _synchronize(self.device)
        self.seconds[part] += time.perf_counter() - start

    def answered(self, rows: int) -> None:
        self.batches += 1
        self.rows += int(rows)

    @property
    def cost_ratio(self) -> float | None:
        """Defense seconds over victim seconds; None before any batch was timed."""
        victim = self.seconds["victim"]
        return self.seconds["defense"] / victim if victim > 0 else None


def price_record(clock: ServingClock, state_size: Any) -> dict[str, Any]:
    """The `price` section of results.json."""
    size = None
    if isinstance(state_size, (int, float)) and not isinstance(state_size, bool) and math.isfinite(state_size) \
            and state_size >= 0:
        size = int(state_size)
    return {"defense/cost_ratio": clock.cost_ratio, "defense/state_size": size,
            "victim_seconds": round(clock.seconds["victim"], 6), "defense_seconds": round(clock.seconds["defense"], 6),
            "batches": clock.batches, "answers": clock.rows, "device": str(clock.device)}


def state_size(defense, who: str) -> int | None:
    """The defense's `state_size()` for the price record; None (and a warning) where it raises or gives no count."""
    try:
        size = defense.state_size()
    except Exception as exc:  # noqa: BLE001 - plugin code: a missing figure, not a failed run
        console.info(f"[yellow]warning[/]: defense {console.escape(who)}: state_size() raised "
                     f"{console.escape(type(exc).__name__)}; its state size is recorded as unknown (null)")
        return None
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        console.info(f"[yellow]warning[/]: defense {console.escape(who)}: state_size() gave "
                     f"{console.escape(repr(size)[:40])}, not a count; recorded as unknown (null)")
        return None
    return size


__all__ = ["PRICE_KEYS", "ServingClock", "price_record", "state_size"]
