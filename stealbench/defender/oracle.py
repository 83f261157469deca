"""The black-box API, on the defender's side: victim + defense behind query accounting and validation.

The attacker's process never holds this object: its requests arrive over a channel (see ``defender/referee.py``).
Tests and the conformance kit use it directly.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..attacks.base import QueryCounter
from ..defenses.base import Defense
from ..errors import BudgetExceededError, OracleInputError
from ..metrics import DefenseStats
from ..transport import AUDIT_BLOCK, audit_stride, audited_queries
from .accounts import account_defenses, account_records, check_accounts, owners, summary
from .benign import BenignTraffic
from .cost import ServingClock, price_record
from .guard import check_probabilities, guarded_answer

_PIXEL_TOLERANCE = 1e-6


def validate_images(x: Tensor, input_shape: tuple[int, ...]) -> None:
    """OracleInputError unless x is a float batch (N, *input_shape) of finite pixels in [0, 1]."""
    if not isinstance(x, Tensor):
        raise OracleInputError(f"oracle.query expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise OracleInputError(f"oracle.query expects float images in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise OracleInputError(
            f"oracle.query expects images shaped (N, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )
    if len(x) and (x.min() < -_PIXEL_TOLERANCE or x.max() > 1 + _PIXEL_TOLERANCE):
        raise OracleInputError(
            f"oracle.query expects pixel-space images in [0, 1], got values in [{x.min().item():.3g}, "
            f"{x.max().item():.3g}]; clip in pixel space (normalisation lives inside the model)"
        )
    if not torch.isfinite(x).all():
        raise OracleInputError("oracle.query got NaN or infinite pixels")


def quantize_pixels(x: Tensor, bits: int) -> Tensor:
    """Pixels in [0, 1] rounded to `bits` bits: round(x * (2^bits - 1)) / (2^bits - 1) (8: x -> round(255 x)/255)."""
    levels = float(2 ** bits - 1)
    return torch.round(x * levels) / levels


class Oracle(QueryCounter):
    """Answers queries with the defended victim's probabilities, never past the budget.

    Every image counts as one query. Inputs must be float tensors (N, C, H, W) in pixel space [0, 1]. The oracle
    keeps no public reference to the victim: attacks see only :meth:`query` and the counters. With `quantize`
    (bits, ``--oracle.quantize 8``) every attacker query is rounded to that many bits per pixel here, before the
    victim and the defense see it (a realistic image API's 8-bit channel); benign traffic is left as it is. With
    `accounts` k > 1 (``--oracle.accounts``) the queries are charged to k accounts and a stateful defense keeps one
    state per account (defender/accounts.py).
    """

    def __init__(self, victim: nn.Module, defense: Defense, *, budget: int, input_shape: tuple[int, int, int],
                 num_classes: int, device: torch.device | str = "cpu", batch_size: int = 1024,
                 defense_name: str | None = None, benign_x: Tensor | None = None,
                 benign_generator: torch.Generator | None = None, quantize: int | None = None,
                 accounts: int = 1, account_split: str = "round_robin", benign_state: str = "shared") -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        check_accounts(accounts, account_split, budget, benign_state)
        if quantize is not None and not 1 <= int(quantize) <= 16:
            raise ValueError(f"quantize must be between 1 and 16 bits, got {quantize}")
        self.quantize = None if quantize is None else int(quantize)
        self.budget = int(budget)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self._used = 0
        self._stats = DefenseStats()
        self._audit = RecoveryAudit(self.budget, num_classes)
        self._clock = ServingClock(device)  # the defense's price: its serving time over the victim's
        self._who = defense_name or type(defense).__name__
        self.accounts, self.account_split = int(accounts), account_split
        self._defenses = account_defenses(defense, self.accounts)
        answerers = {id(d): _make_answerer(victim, d, torch.device(device), self._who, self._clock)
                     for d in self._defenses}
        self._answerers = [answerers[id(d)] for d in self._defenses]
        self._account_used = torch.zeros(self.accounts, dtype=torch.long)  # queries charged to each account
        self._answer = self._answerers[0]
        self.benign_state = benign_state
        self._benign_defense = None  # with an account of their own, the benign users' defense (a copy if stateful)
        self._benign_answer = None
        if benign_state == "own":
            self._benign_defense = account_defenses(defense, 2)[1]
            self._benign_answer = answerers.get(id(self._benign_defense)) or _make_answerer(
                victim, self._benign_defense, torch.device(device), self._who, self._clock)
        self._one_state = len(answerers) == 1  # one account, or a shared stateless defense: answer chunks whole
        # benign users' images (the evaluation set), mixed into the attacker's batches: see defender/benign.py
        self._benign = None if benign_x is None else BenignTraffic(
            benign_x, self.budget, benign_generator or torch.Generator().manual_seed(0))

    def query(self, x: Tensor) -> Tensor:
        """Released probabilities (N, K) for images x (N, C, H, W), on x's device."""
        self._validate(x)
        n = len(x)
        if n > self.remaining:
            raise BudgetExceededError(
                f"a query of {n} images exceeds the remaining budget ({self.remaining} of {self.budget} left); "
                "an attack must check oracle.remaining and query at most that many"
            )
        if n == 0:
            return torch.empty(0, self.num_classes, device=x.device)
        if self.quantize is not None:  # the channel: what reaches the victim and the defense
            x = quantize_pixels(x, self.quantize)
        released_parts = []
        start = self._used
        for chunk in x.split(self.batch_size):
            clean, released, clean_log = self._answer_accounts(chunk, start)
            self._stats.update(clean, released, clean_log)
            self._audit.keep(start + torch.arange(len(chunk)), clean)
            start += len(chunk)
            released_parts.append(released)
        self._used += n
        return torch.cat(released_parts).to(x.device)

    def _answer_accounts(self, chunk: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor]:
        """The chunk's queries (numbers start, start+1, ...) answered by the accounts they are charged to."""
        owner = owners(start + torch.arange(len(chunk)), self.budget, self.accounts, self.account_split)
        self._account_used += torch.bincount(owner, minlength=self.accounts)
        if self._one_state:  # the answers do not depend on the account: exactly as with one account
            return self._answer_mixed(chunk, start + len(chunk), self._answer)
        parts = []
        for i, account in enumerate(_in_order(owner)):
            rows = (owner == account).nonzero().squeeze(1)
            answer = self._answerers[account]
            # the benign images due by now ride with the chunk's first account, as they would with one account
            parts.append((rows, self._answer_mixed(chunk[rows.to(chunk.device)], start + len(chunk), answer)
                          if i == 0 else answer(chunk[rows.to(chunk.device)])))
        return tuple(_scatter_rows(len(chunk), [(rows, part[j]) for rows, part in parts]) for j in range(3))

    def _answer_mixed(self, chunk: Tensor, used_after: int, answer) -> tuple[Tensor, Tensor, Tensor]:
        """The attacker's chunk answered in one batch with the benign images due by now; returns its own rows."""
        if self._benign is None:
            return answer(chunk)
        if self._benign_answer is not None:  # the benign users' own account: their own batch and state
            benign = self._benign.take(chunk, used_after)
            if len(benign):
                self._benign.keep(*self._benign_answer(benign))
            return answer(chunk)
        batch, order, n = self._benign.mix(chunk, used_after)
        clean, released, clean_log = answer(batch)
        order = order.to(clean.device)
        clean, released, clean_log = clean[order], released[order], clean_log[order.cpu()]
        c = len(chunk)
        if n:
            self._benign.keep(clean[c:], released[c:], clean_log[c:])
        return clean[:c], released[:c], clean_log[:c]

    def benign_answers(self) -> tuple[Tensor, Tensor, Tensor]:
        """Answer the benign images still waiting (after the attack), and return (clean, released, clean log) of
        all of them, in order; the defender's utility figures come from these."""
        if self._benign is None:
            raise ValueError("this oracle was built without benign traffic (benign_x)")
        for batch in self._benign.remaining(self.batch_size):
            self._benign.keep(*(self._benign_answer or self._answer)(batch))
        return self._benign.answers()

    def stats(self) -> dict[str, float]:
        """Defense statistics over every answered query (keys prefixed `oracle/`)."""
        return self._stats.compute("oracle/")

    def account_records(self) -> list[dict]:
        """Per account: its queries and, for a stateful defense, its state size and report (defender/accounts.py)."""
        return account_records(self._defenses, self._account_used.tolist(), self._who)

    def benign_record(self) -> dict | None:
        """The benign users' own account (``benign_state="own"``): its queries, state size and report; else None."""
        if self._benign_defense is None or self._benign is None:
            return None
        (record,) = account_records([self._benign_defense], [self._benign.sent], self._who, force=True)
        return {**record, "account": "benign"}

    def accounts_summary(self) -> dict[str, float]:
        """`accounts/...` figures for results.json's extra metrics (the benign account's under `accounts/benign/`);
        empty with one account and benign traffic in the attacker's state."""
        out = summary(self.account_records()) if self.accounts > 1 else {}
        benign = self.benign_record()
        if benign is not None:
            out.update({f"accounts/benign/{k}": v for k, v in benign.get("report", {}).items()})
        return out

    def price(self, state_size: int | None) -> dict:
        """results.json's `price`: `defense/cost_ratio` (the defense's time over the victim's forward pass, every
        batch answered so far) and `defense/state_size` (as the caller read it from the defense)."""
        return price_record(self._clock, state_size)

    def report_recovered(self, index: Tensor, recovered: Tensor) -> None:
        """The attacker's recovered answers for audited queries: `index` (n, r) the queries each row came from."""
        self._audit.score(index, recovered)

    def recovery(self) -> dict[str, float]:
        """`label_mode/recovery_l1` (mean L1 between the attacker's recovered answers and the clean ones) and the
        rows it rests on; empty if the attacker sent none."""
        return self._audit.compute()

    def _validate(self, x: Tensor) -> None:
        validate_images(x, self.input_shape)


class RecoveryAudit:
    """Clean answers of the audited queries (see :func:`stealbench.transport.audited_queries`), and the L1 of the
    attacker's recovered answers to them. A row recovered from several queries (a mode that asks an image
    several times) is scored against the mean of their clean answers."""

    def __init__(self, budget: int, num_classes: int) -> None:
        self.budget = budget
        self.num_classes = num_classes
        self.stride = audit_stride(budget)
        blocks = -(-budget // (AUDIT_BLOCK * self.stride))
        self._clean = torch.full((blocks * AUDIT_BLOCK, num_classes), float("nan"), dtype=torch.float64)
        self._l1_sum = 0.0
        self._rows = 0

    def _slot(self, index: Tensor) -> Tensor:
        return (index // AUDIT_BLOCK // self.stride) * AUDIT_BLOCK + index % AUDIT_BLOCK

    def keep(self, index: Tensor, clean: Tensor) -> None:
        mask = audited_queries(index, self.budget)
        if mask.any():
            self._clean[self._slot(index[mask])] = clean[mask.to(clean.device)].detach().double().cpu()

    def score(self, index: Tensor, recovered: Tensor) -> None:
        from ..errors import OracleInputError

        if not (isinstance(index, Tensor) and isinstance(recovered, Tensor) and index.dim() == 2
                and recovered.shape == (len(index), self.num_classes) and not index.is_floating_point()):
            raise OracleInputError("recovered answers must come as index (n, r) integers and answers (n, K)")
        index = index.long()
        ok = ((index >= 0) & (index < self.budget)).all(1)
        ok &= audited_queries(index.clamp(0, self.budget - 1), self.budget).all(1)
        if not ok.any():
            return
        clean = self._clean[self._slot(index[ok])].mean(1)  # (n, K): NaN where a query was never asked
        answered = torch.isfinite(clean).all(1)
        l1 = (recovered[ok].double() - clean).abs().sum(-1)[answered]
        l1 = l1[torch.isfinite(l1)]
        self._l1_sum += float(l1.sum())
        self._rows += len(l1)

    def compute(self) -> dict[str, float]:
        if not self._rows:
            return {}
        return {"label_mode/recovery_l1": self._l1_sum / self._rows, "label_mode/recovery_rows": float(self._rows)}


def _in_order(owner: Tensor) -> list[int]:
    """The distinct accounts of a chunk, in the order their first queries come."""
    accounts, inverse = owner.unique(return_inverse=True)
    first = torch.full((len(accounts),), len(owner), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(owner)), reduce="amin")
    return accounts[first.argsort()].tolist()


def _scatter_rows(n: int, parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Rows answered per account put back in query order."""
    template = parts[0][1]
    out = template.new_empty((n, *template.shape[1:]))
    for rows, values in parts:
        out[rows.to(out.device)] = values
    return out


def _make_answerer(victim: nn.Module, defense: Defense, device: torch.device, defense_name: str,
                   clock: ServingClock | None = None) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Closure over victim and defense, so the oracle object itself holds no attribute pointing at the victim.

    Answers (clean, released, clean log-probabilities): the float64 log-softmax of the logits feeds the KL
    statistics, exact where the float32 softmax underflows (see ``stealbench.metrics``). `clock` times the victim's
    forward pass and the defense's (stealbench.defender.cost).
    """
    clock = clock or ServingClock(device)
    victim = victim.to(device).eval()
    defense = defense.to(device)

    @torch.no_grad()
    def answer(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x.to(device, torch.float32)
        with clock.timing("victim"):
            logits = victim(x)
            clean = torch.softmax(logits, dim=-1)
        # float64 on the CPU (where the statistics accumulate): some accelerators (MPS) have no float64
        clean_log = torch.log_softmax(logits.cpu().double(), dim=-1)
        released = guarded_answer(defense, x, clean, defense_name, clock=clock)
        clock.answered(len(x))
        return clean, released, clean_log

    return answer


__all__ = ["Oracle", "RecoveryAudit", "check_probabilities", "quantize_pixels", "validate_images"]
