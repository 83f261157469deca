"""Per-account budgets and query counts for the server; one defense copy per account for stateful defenses.

An account is named by `Authorization: Bearer <key>` (the key's SHA-256 prefix, never the key itself) or by an
`X-Account` header; without either, "anonymous". Every image counts as one query; a batch that does not fit
in what an account has left is refused whole (429), so the count never passes the budget.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from .errors import V2Error

ANONYMOUS = "anonymous"
MAX_ACCOUNTS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9._@:+-]{1,64}$")

Answerer = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


def account_of(authorization: str | None, x_account: str | None) -> str:
    """The account a request is charged to; V2Error(401/400) for a malformed header."""
    if authorization:
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise V2Error(401, "the Authorization header must read 'Bearer <api key>'")
        return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    if x_account is not None:
        if not _NAME.match(x_account):
            raise V2Error(400, "X-Account must be 1-64 characters of letters, digits and ._@:+-")
        return x_account
    return ANONYMOUS


@dataclass
class Account:
    name: str
    answer: Answerer
    used: int = 0


class Accounts:
    """The server's ledger. `make_answerer(defense)` wraps the victim with a defense; a stateful defense gets one
    deep copy per account (its query history is that account's), a stateless one is shared."""

    def __init__(self, budget: int, defense: Any, make_answerer: Callable[[Any], Answerer],
                 max_accounts: int = MAX_ACCOUNTS) -> None:
        self.budget = int(budget)
        self._defense = defense
        self._make_answerer = make_answerer
        self._stateful = bool(getattr(defense, "stateful", False))
        self._shared = None if self._stateful else make_answerer(defense)
        self._accounts: dict[str, Account] = {}
        self._max = max_accounts
        self.lock = threading.Lock()  # one request at a time: the victim, the defense and the counts

    def get(self, name: str) -> Account:
        account = self._accounts.get(name)
        if account is None:
            if len(self._accounts) >= self._max:
                raise V2Error(429, f"the server holds its maximum of {self._max} accounts")
            answer = self._make_answerer(copy.deepcopy(self._defense)) if self._stateful else self._shared
            account = self._accounts[name] = Account(name, answer)
        return account

    def counts(self, account: Account) -> dict[str, Any]:
        return {"account": account.name, "queries_used": account.used, "queries_left": self.budget - account.used,
                "budget": self.budget}

    def charge(self, account: Account, n: int) -> None:
        """Refuse (429) a batch of n images that does not fit in the account's budget."""
        left = self.budget - account.used
        if n > left:
            raise V2Error(429, f"budget exhausted on account {account.name!r}: a batch of {n} images exceeds the "
                               f"{left} queries left of {self.budget}", parameters=self.counts(account))

    def answer(self, name: str, images: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Released probabilities for `images`, charged to account `name`; its counts after the batch."""
        with self.lock:
            account = self.get(name)
            self.charge(account, len(images))
            _, released, _ = account.answer(images)
            account.used += len(images)
            return released, self.counts(account)
