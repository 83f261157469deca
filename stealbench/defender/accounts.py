"""The attacker's budget spread over k accounts (``--oracle.accounts k``), on the defender's side.

A real attacker holds several accounts, and a stateful defense (PRADA's detector, ModelGuard-S's centroids) only
sees the queries of the account they arrive on. Here query number i (0-based, over the whole budget) is charged
to account ``i mod k`` (`round_robin`: the stream interleaved) or ``i // ceil(budget / k)`` (`sequential`: one
account after another); the attack itself does not change. A stateful defense gets one state per account: account
0 keeps the run's defense, the others deep copies made after its setup (same settings, same initial state). A
stateless defense is shared. Benign users' images (defender/benign.py) stay mixed into the batch of the chunk's
first account, as with one account (``benign_state="shared"``, the default: account 0's state then holds benign
traffic too), or are an account of their own (``"own"``: their own batches and, for a stateful defense, their own
state, whose detector figures are then its false alarms). A sweep over k compares like with like only under one
benign state: use ``own`` for all of its runs.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from ..defenses.base import Defense
from ..errors import ConfigError, StealbenchError
from .cost import state_size
from .guard import checked_report

SPLITS = ("round_robin", "sequential")


BENIGN_STATES = ("shared", "own")


def check_accounts(accounts: int, split: str, budget: int, benign_state: str = "shared") -> None:
    """ConfigError for a number of accounts the budget cannot fill, or an unknown split or benign state."""
    if benign_state not in BENIGN_STATES:
        raise ConfigError(f"--oracle.benign_state must be one of {', '.join(BENIGN_STATES)}, got {benign_state!r}")
    if isinstance(accounts, bool) or not isinstance(accounts, int) or accounts < 1:
        raise ConfigError(f"--oracle.accounts must be a whole number >= 1, got {accounts!r}")
    if accounts > budget:
        raise ConfigError(f"--oracle.accounts {accounts} is more accounts than queries (--budget {budget}): every "
                          "account needs at least one query; lower --oracle.accounts or raise --budget")
    if split not in SPLITS:
        raise ConfigError(f"--oracle.account_split must be one of {', '.join(SPLITS)}, got {split!r}")


def owners(index: Tensor, budget: int, accounts: int, split: str) -> Tensor:
    """The account (0 .. accounts-1) that query number `index` (0-based) is charged to."""
    if split == "round_robin":
        return index % accounts
    return torch.div(index, -(-budget // accounts), rounding_mode="floor")


def account_defenses(defense: Defense, accounts: int) -> list[Defense]:
    """One defense per account: the run's own for account 0, deep copies for the others when it is stateful."""
    if accounts == 1 or not getattr(defense, "stateful", False):
        return [defense] * accounts
    try:
        return [defense] + [copy.deepcopy(defense) for _ in range(accounts - 1)]
    except Exception as exc:  # noqa: BLE001 - plugin code
        raise StealbenchError(f"defense {type(defense).__name__} is stateful, so each account needs its own copy, "
                              f"but copy.deepcopy of it raised {type(exc).__name__}: {str(exc)[:200]}; make it "
                              "deep-copyable after setup() (CONTRIBUTING.md, stateful defenses)") from None


def account_records(defenses: list[Defense], used: list[int], who: str, force: bool = False
                    ) -> list[dict[str, Any]]:
    """Per account: its queries, its defense's state size and its defense's own report (checked)."""
    stateful = force or bool(getattr(defenses[0], "stateful", False))
    records = []
    for i, (defense, n) in enumerate(zip(defenses, used)):
        record: dict[str, Any] = {"account": i, "queries": n}
        if stateful:  # a shared, stateless defense has no per-account state to report
            record["state_size"] = state_size(defense, who)
            record["report"] = checked_report(defense, who)
        records.append(record)
    return records


def summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """`accounts/...` figures over the accounts: their number, queries per account, and for each figure of the
    defenses' reports its mean and max over accounts (for PRADA, `accounts/defense/report/alarm/mean` is the
    share of accounts whose detector fired)."""
    out = {"accounts/count": float(len(records)),
           "accounts/queries/max": float(max(r["queries"] for r in records))}
    reports = [r["report"] for r in records if "report" in r]
    if reports:
        for key in sorted(set().union(*reports)):
            values = [rep[key] for rep in reports if key in rep]
            out[f"accounts/{key}/mean"] = sum(values) / len(values)  # over the accounts that report it
            out[f"accounts/{key}/max"] = max(values)
        sizes = [r["state_size"] for r in records if r.get("state_size") is not None]
        if sizes:
            out["accounts/state_size/max"] = float(max(sizes))
    return out


__all__ = ["BENIGN_STATES", "SPLITS", "account_defenses", "account_records", "check_accounts", "owners", "summary"]
