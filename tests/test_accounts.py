"""Many-account attackers (--oracle.accounts k): queries charged to k accounts, one defense state per account for a
stateful defense, the benign users' traffic in the attacker's state or in an account of their own."""

from __future__ import annotations

import json

import pytest
import torch

from stealbench.config import OracleConfig
from stealbench.defender.accounts import check_accounts, owners
from stealbench.defender.oracle import Oracle
from stealbench.defenses.base import Defense
from stealbench.defenses.noise import LogitNoise
from stealbench.errors import ConfigError


class Tally(Defense):
    """A stateful defense that remembers every image it answered (its first pixel: the query's number)."""

    stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def forward(self, x, probs):
        self.seen.extend(x[:, 0, 0, 0].tolist())
        return probs

    def state_size(self) -> int:
        return len(self.seen)

    def report(self) -> dict[str, float]:
        return {"alarm": float(len(self.seen) > 30), "seen": float(len(self.seen))}


class Victim(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1), x.flatten(1)[:, 1]], 1)


def numbered(n: int, start: int = 0) -> torch.Tensor:
    """Images whose first pixel encodes their query number (scaled into [0, 1]); the rest random."""
    x = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(start))
    x[:, 0, 0, 0] = (start + torch.arange(n)) / 1000
    return x


def make_oracle(defense, budget=100, **kw):
    return Oracle(Victim(), defense, budget=budget, input_shape=(1, 2, 2), num_classes=3, batch_size=16, **kw)


def test_owners_round_robin_and_sequential():
    index = torch.arange(10)
    assert owners(index, 10, 3, "round_robin").tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert owners(index, 10, 3, "sequential").tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    for split in ("round_robin", "sequential"):
        for budget, k in ((7, 7), (100, 8), (5, 1)):
            counts = torch.bincount(owners(torch.arange(budget), budget, k, split), minlength=k)
            assert len(counts) == k and (counts >= 1).all() and int(counts.sum()) == budget


@pytest.mark.parametrize("split", ["round_robin", "sequential"])
def test_each_account_has_its_own_state_and_sees_only_its_queries(split):
    defense = Tally()
    oracle = make_oracle(defense, budget=90, accounts=3, account_split=split)
    for n in (5, 40, 45):  # batches that straddle the accounts' shares
        oracle.query(numbered(n, oracle.used))
    records = oracle.account_records()
    assert [r["queries"] for r in records] == [30, 30, 30]
    expected = owners(torch.arange(90), 90, 3, split)
    for account, record in enumerate(records):
        mine = sorted(round(v * 1000) for v in oracle._defenses[account].seen)
        assert mine == (expected == account).nonzero().squeeze(1).tolist()
        assert record["state_size"] == 30 and record["report"]["defense/report/seen"] == 30.0
    assert oracle._defenses[0] is defense  # the run's own defense is account 0's
    summary = oracle.accounts_summary()
    assert summary["accounts/count"] == 3 and summary["accounts/defense/report/alarm/max"] == 0.0


def test_one_account_holds_every_query_in_the_run_defense():
    defense = Tally()
    oracle = make_oracle(defense, budget=40)
    oracle.query(numbered(40))
    assert len(defense.seen) == 40 and oracle.accounts_summary() == {}
    assert oracle.account_records() == [{"account": 0, "queries": 40, "state_size": 40,
                                         "report": {"defense/report/alarm": 1.0, "defense/report/seen": 40.0}}]
    assert make_oracle(LogitNoise(), accounts=2).account_records() == [{"account": 0, "queries": 0},
                                                                        {"account": 1, "queries": 0}]


def test_a_stateless_defense_answers_exactly_as_with_one_account():
    x = numbered(64)
    answers = []
    for k in (1, 4):
        oracle = make_oracle(LogitNoise(eps=0.5, seed=3), budget=64, accounts=k)
        answers.append(oracle.query(x))
        assert [r["queries"] for r in oracle.account_records()] == [64 // k] * k
    assert torch.equal(*answers)


def test_the_answers_come_back_in_query_order():
    oracle = make_oracle(Tally(), budget=48, accounts=5)
    x = numbered(48)
    clean = torch.softmax(Victim()(x), -1)
    torch.testing.assert_close(oracle.query(x), clean)


def test_benign_traffic_in_the_attackers_state_or_in_its_own():
    benign = torch.full((20, 1, 2, 2), 0.9)
    shared, own = Tally(), Tally()
    a = make_oracle(shared, budget=40, benign_x=benign)
    b = make_oracle(own, budget=40, benign_x=benign, benign_state="own")
    for oracle in (a, b):
        oracle.query(numbered(40))
        oracle.benign_answers()
    assert len(shared.seen) == 60  # the earlier behaviour: one state for the attacker and the benign users
    assert len(own.seen) == 40 and all(v < 0.9 for v in own.seen)
    record = b.benign_record()
    assert record["account"] == "benign" and record["queries"] == 20 and record["state_size"] == 20
    assert b.accounts_summary()["accounts/benign/defense/report/seen"] == 20.0
    clean, released, _ = b.benign_answers()
    assert len(clean) == 20 and torch.equal(clean, released)


def test_bad_account_settings_fail_clearly():
    with pytest.raises(ConfigError, match="more accounts than queries"):
        check_accounts(11, "round_robin", 10)
    with pytest.raises(ConfigError, match="oracle.accounts must be a whole number"):
        check_accounts(0, "round_robin", 10)
    with pytest.raises(ConfigError, match="account_split must be one of round_robin, sequential"):
        check_accounts(2, "interleaved", 10)
    with pytest.raises(ConfigError, match="oracle.accounts must be an integer"):
        OracleConfig(accounts=0)
    with pytest.raises(ConfigError, match="benign_state must be shared or own"):
        OracleConfig(benign_state="mine")
    with pytest.raises(ConfigError, match="endpoint keeps its own accounts"):
        OracleConfig(url="http://127.0.0.1:1", accounts=2)


def test_fit_records_the_accounts(tmp_path):
    from stealbench.cli import main

    out = tmp_path / "runs"
    code = main(["fit", "--data", "digits", "--defense", "modelguard-s", "--attack", "random", "--attack.epochs", "1",
                 "--budget", "120", "--victim.epochs", "1", "--oracle.accounts", "3", "--oracle.benign_state", "own",
                 "--progress_bar", "false", "--output_dir", str(out)])
    assert code == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["identity"]["oracle_accounts"] == 3 and results["identity"]["oracle_benign_state"] == "own"
    accounts = results["accounts"]
    assert [r["queries"] for r in accounts["per_account"]] == [40, 40, 40]
    assert all(r["state_size"] >= 1 for r in accounts["per_account"])
    assert accounts["benign"]["queries"] == results["splits"]["eval"]
    assert results["extra_metrics"]["accounts/count"] == 3.0
    assert main(["fit", "--data", "digits", "--budget", "2", "--oracle.accounts", "3",
                 "--output_dir", str(out)]) != 0
