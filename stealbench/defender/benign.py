"""Benign users' traffic: the evaluation set, answered by the same defense instance as the attacker, in the same
batches.

Why: utility (``victim/acc_defended``, ``defense/*``) used to be measured on a deep copy of the defense before the
attack, and a defense could recognise that copy (or that moment) and answer it truthfully while the attacker got
noise. Here each batch the defense sees mixes attacker queries with evaluation images in a seeded random order,
spread evenly over the budget; what is left when the attack ends is answered last, in batches like the
attacker's. A stateful defense therefore sees benign traffic in its history, as it would on a real API. With
``--oracle.benign_state own`` the benign users are an account of their own instead (defender/accounts.py): their
images, due at the same pace, go in batches of their own to a state of their own.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BenignTraffic:
    """The evaluation images waiting to be answered, and the answers (clean, released, clean log) kept in order."""

    def __init__(self, x: Tensor, budget: int, generator: torch.Generator) -> None:
        self.x = x
        self.budget = max(int(budget), 1)
        self.generator = generator
        self.sent = 0  # evaluation images handed to the defense so far
        self._parts: list[tuple[Tensor, Tensor, Tensor]] = []
        self._last_batch = 0

    def due(self, attacker_used: int) -> int:
        """How many evaluation images go with the attacker's queries up to `attacker_used` (an even spread)."""
        target = min(len(self.x), -(-len(self.x) * attacker_used // self.budget))
        return max(0, target - self.sent)

    def take(self, chunk: Tensor, attacker_used: int) -> Tensor:
        """The evaluation images due with `chunk` (see `due`), handed out: for a benign account of its own."""
        self._last_batch = max(self._last_batch, len(chunk))
        n = self.due(attacker_used)
        benign = self.x[self.sent:self.sent + n].to(chunk.device, chunk.dtype)
        self.sent += n
        return benign

    def mix(self, chunk: Tensor, attacker_used: int) -> tuple[Tensor, Tensor, int]:
        """(batch, order, n_benign): `chunk` and the due evaluation images, shuffled; `order` undoes the shuffle."""
        benign = self.take(chunk, attacker_used)
        n = len(benign)
        batch = torch.cat([chunk, benign])
        perm = torch.randperm(len(batch), generator=self.generator).to(chunk.device)
        return batch[perm], torch.argsort(perm), n

    def keep(self, clean: Tensor, released: Tensor, clean_log: Tensor) -> None:
        self._parts.append((clean.detach().cpu(), released.detach().cpu(), clean_log.detach().cpu()))

    def remaining(self, batch_size: int) -> list[Tensor]:
        """The evaluation images not yet answered, in batches the size of the attacker's largest (or batch_size)."""
        size = min(batch_size, self._last_batch) if self._last_batch else batch_size
        rest = self.x[self.sent:]
        self.sent = len(self.x)
        return list(rest.split(size)) if len(rest) else []

    def answers(self) -> tuple[Tensor, Tensor, Tensor]:
        """(clean, released, clean log-probabilities) of every evaluation image, in the evaluation set's order."""
        if not self._parts:
            empty = torch.empty(0)
            return empty, empty, empty.double()
        return tuple(torch.cat(part) for part in zip(*self._parts))  # type: ignore[return-value]


__all__ = ["BenignTraffic"]
