"""Randomness by role: every random choice of a run derives from (run seed, role[, index]).

Roles draw from independent streams, so no component's draws can shift another's: two runs with the same seed
that differ only in the defense share the attacker's seed set, query order, surrogate initialisations and batch
orders (common random numbers), and a paired difference between them measures the defense alone.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import torch

#: role -> what draws from it
ROLES: dict[str, str] = {
    "victim": "the victim's initial weights and training batches",
    "defense": "the defense's setup (proxies, detectors, calibration) and its models' training",
    "oracle": "randomised defenses' answers to the attacker's queries",
    "evaluation": "randomised defenses' answers on the evaluation set (utility statistics)",
    "seed_set": "the framework's choice of the attacker's labelled seed set",
    "attack": "the attack's own choices (query order, sampling, targets)",
    "surrogate_init": "each new surrogate's initial weights (indexed by creation)",
    "surrogate_train": "each surrogate training call's batch order and dropout (indexed by call)",
    "shadow": "a label mode's own models (D-DAE's shadow victims, detector, restorer; indexed by use)",
}

SEED_LIMIT = 2**63  # role seeds fit torch.Generator.manual_seed and Python's int64-based APIs


def role_seed(seed: int, role: str, index: int | None = None) -> int:
    """A 63-bit seed for `role` (and its `index`-th use) of the run seeded `seed`; a hash, so roles are independent."""
    if role not in ROLES:
        raise ValueError(f"unknown random role {role!r}; roles: {', '.join(ROLES)}")
    text = f"stealbench/{int(seed)}/{role}" + ("" if index is None else f"/{int(index)}")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % SEED_LIMIT


def role_generator(seed: int, role: str, index: int | None = None) -> torch.Generator:
    return torch.Generator().manual_seed(role_seed(seed, role, index))


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators for the block, then restore them.

    Code that draws from the global generators (layer initialisation, dropout, plugins that ignore the generator
    they are given) is then a function of `seed`, whatever ran before it in the process.
    """
    from lightning.fabric.utilities.seed import seed_everything
    from lightning.pytorch.utilities.seed import isolate_rng

    with isolate_rng():
        seed_everything(seed % 2**32, workers=True, verbose=False)  # seed_everything takes 32-bit seeds
        torch.manual_seed(seed)
        yield


def named_seed(base: int, name: str) -> int:
    """A 63-bit seed for the network called `name` of a stream seeded `base` (``ctx.new_network``: base is the
    attack role's seed, so the weights derive from (run seed, "attack", name)); never equal to an indexed use."""
    text = f"stealbench/network/{int(base)}/{name}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % SEED_LIMIT


class RoleCounter:
    """Hands out role seeds for successive uses of one role (the i-th surrogate, the i-th training call)."""

    def __init__(self, seed: int, role: str) -> None:
        self.seed, self.role, self.count = seed, role, 0

    def next(self) -> int:
        value = role_seed(self.seed, self.role, self.count)
        self.count += 1
        return value


__all__ = ["ROLES", "RoleCounter", "named_seed", "role_generator", "role_seed", "seeded_globals"]
