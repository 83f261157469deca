"""A defense's price (issue 19, item 6): its serving time over the victim's forward pass, measured by the oracle in the
same run, and the state it keeps; recorded in results.json's `price` and shown on the leaderboard."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch

from stealbench.analysis.leaderboard import build
from stealbench.analysis.runs import MalformedRun, validate_results
from stealbench.analysis.tables import to_markdown
from stealbench.attacks.random import RandomSamples
from stealbench.cli import main
from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
from stealbench.data.digits import Digits
from stealbench.defender.cost import ServingClock
from stealbench.defender.oracle import Oracle
from stealbench.defenses.base import Defense
from stealbench.defenses.modelguard import ModelGuardS
from stealbench.defenses.none import NoDefense
from stealbench.runner import Experiment, run_experiment
from stealbench.testing.world import TinyWorld, make_defense_setup

from test_leaderboard import write_run


class Sleepy(Defense):
    """Answers like `none`, after a nap per batch: a defense that costs serving time and nothing else."""

    def forward(self, x, probs):
        time.sleep(0.02)
        return probs.clone()


def fit(tmp_path: Path, defense: Defense, key: str) -> dict:
    exp = Experiment(data=Digits(), defense=defense, attack=RandomSamples(num_checkpoints=1, epochs=2),
                     keys={"data": "digits", "defense": key, "attack": "random"}, budget=120,
                     victim=VictimConfig(epochs=2), surrogate=SurrogateConfig(), wandb=WandbConfig(mode="disabled"),
                     output_dir=str(tmp_path), name=key)
    run_experiment(exp)
    return json.loads((tmp_path / key / "results.json").read_text())


def test_a_run_records_its_price(tmp_path, one_thread):
    plain = fit(tmp_path, NoDefense(), "none")
    price = plain["price"]
    assert math.isfinite(price["defense/cost_ratio"]) and price["defense/cost_ratio"] > 0
    assert price["defense/state_size"] == 0  # stateless
    # every answered image was timed: the attacker's 120 queries and the benign users' evaluation set
    assert price["answers"] == 120 + plain["splits"]["eval"] and price["batches"] >= 1
    assert price["victim_seconds"] > 0 and price["defense_seconds"] > 0
    # timings vary from run to run: they stay out of the metrics a repeated run must reproduce
    assert not any("cost" in k for k in [*plain["metrics"], *plain["extra_metrics"]])
    validate_results(plain, "none")  # the leaderboard reads it


def oracle_price(defense: Defense, world: TinyWorld, batch_size: int = 16) -> dict:
    oracle = Oracle(world.victim(), defense, budget=100, input_shape=world.input_shape,
                    num_classes=world.num_classes, batch_size=batch_size)
    oracle.query(world.images(40, 1))
    return oracle.price(defense.state_size())


def test_a_slow_defense_costs_more_than_none():
    world = TinyWorld(seed=0)
    plain, slow = oracle_price(NoDefense(), world), oracle_price(Sleepy(), world)
    assert slow["defense_seconds"] >= 0.02 * slow["batches"]
    assert slow["defense/cost_ratio"] > 5 * plain["defense/cost_ratio"]
    assert slow["defense/state_size"] == plain["defense/state_size"] == 0


def test_the_oracle_times_every_batch_and_reads_a_stateful_defenses_size():
    world = TinyWorld(seed=0)
    defense = ModelGuardS(epsilon=0.3)
    defense.setup(make_defense_setup(world))
    price = oracle_price(defense, world)
    assert price["batches"] == 3 and price["answers"] == 40  # 16 + 16 + 8
    assert price["defense/state_size"] == defense.report()["centroids"] > 0
    assert price["defense/cost_ratio"] > 0


def test_the_clock_separates_the_parts_and_skips_a_failed_block():
    clock = ServingClock("cpu")
    assert clock.cost_ratio is None  # nothing timed yet: no ratio rather than a division by zero
    with clock.timing("victim"):
        time.sleep(0.01)
    with clock.timing("defense"):
        time.sleep(0.03)
    victim, defense = clock.seconds["victim"], clock.seconds["defense"]
    assert victim >= 0.01 and defense >= 0.03
    with pytest.raises(ValueError):
        with clock.timing("defense"):
            time.sleep(0.01)
            raise ValueError
    assert clock.seconds == {"victim": victim, "defense": defense}
    assert clock.cost_ratio == defense / victim


def _priced(root: Path, defense: str, seed: int, ratio, state=0) -> Path:
    folder = write_run(root, defense=defense, seed=seed, curve=[(200, 0.6), (400, 0.7)])
    payload = json.loads((folder / "results.json").read_text())
    payload["price"] = {"defense/cost_ratio": ratio, "defense/state_size": state, "victim_seconds": 1.0,
                        "defense_seconds": ratio, "batches": 3, "answers": 700, "device": "cpu"}
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


def test_the_leaderboard_shows_the_cost_ratio_beside_the_utility_cost(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        _priced(runs, "none", seed, 0.01)
        _priced(runs, "modelguard-w", seed, 12.0 + seed)
    write_run(runs, defense="deceptive", seed=0, curve=[(200, 0.5), (400, 0.6)])  # an older run: no price
    rows, problems = build([runs])
    assert not problems
    md = to_markdown(rows)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    col = header.index("cost ratio")
    assert col == header.index("utility Δacc") + 1

    def cell(defense: str) -> str:
        line = next(line for line in md.splitlines() if f"| {defense} |" in line)
        return [c.strip() for c in line.strip("|").split("|")][col]

    assert cell("modelguard-w") == "12.50 ± 0.71" and cell("none") == "0.01 ± 0.00" and cell("deceptive") == "n/a"
    # the command: terminal table, Markdown and CSV
    out = tmp_path / "lb"
    assert main(["leaderboard", str(runs), "--out", str(out), "--no-plots"]) == 0
    assert "cost ratio" in capsys.readouterr().out
    assert "| cost ratio |" in (out / "leaderboard.md").read_text()
    with (out / "leaderboard.csv").open() as fh:
        table = {r["defense"]: r for r in csv.DictReader(fh)}
    assert float(table["modelguard-w"]["cost_ratio_mean"]) == 12.5 and table["deceptive"]["cost_ratio_mean"] == ""
    assert float(table["modelguard-w"]["state_size_mean"]) == 0


@pytest.mark.parametrize("bad", [float("nan"), -1.0, "fast", [1]])
def test_a_malformed_price_keeps_a_run_off_the_leaderboard(tmp_path, bad):
    folder = _priced(tmp_path, "modelguard-w", 0, 1.0)
    payload = json.loads((folder / "results.json").read_text())
    payload["price"]["defense/cost_ratio"] = bad
    with pytest.raises(MalformedRun, match="price defense/cost_ratio"):
        validate_results(payload, str(folder))
    payload["price"] = "cheap"
    with pytest.raises(MalformedRun, match="`price` is a str"):
        validate_results(payload, str(folder))
