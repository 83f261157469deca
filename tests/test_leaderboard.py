"""Leaderboards from hand-made results.json files: aggregation, query multiplier, malformed folders."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from stealbench.cli import main
from stealbench.analysis.curves import queries_to_reach, query_multiplier, value_at
from stealbench.analysis.leaderboard import build
from stealbench.analysis.runs import MalformedRun, find_run_folders, run_from_wandb, validate_results


def write_run(root: Path, *, defense: str = "none", attack: str = "jbda", seed: int = 0, budget: int = 400,
              acc: float | None = None, curve: list[tuple[int, float]] | None = None, label_mode: str = "soft",
              defense_args: dict | None = None, data: str = "digits", kl: float = 0.0, name: str | None = None,
              victim_epochs: int = 3) -> Path:
    """A results.json as the runner writes it, with a chosen curve [(queries, surrogate acc), ...]."""
    curve = curve or [(budget, acc if acc is not None else 0.5)]
    acc = curve[-1][1] if acc is None else acc
    folder = root / (name or f"{data}_{defense}_{attack}_{label_mode}_b{budget}_s{seed}")
    folder.mkdir(parents=True)
    payload = {
        "schema": 1, "status": "complete",
        "identity": {"data": data, "defense": defense, "attack": attack, "victim_arch": "cnn",
                     "surrogate_arch": "cnn", "budget": budget, "seed": seed, "label_mode": label_mode},
        "metrics": {"victim/acc": 0.95, "victim/acc_defended": 0.94 if defense != "none" else 0.95,
                    "defense/top1_changed": 0.0, "defense/kl_nats": kl, "defense/kl_nats_rev": 2 * kl,
                    "defense/l1": kl / 2, "surrogate/acc": acc, "surrogate/fidelity": acc + 0.01,
                    "queries": curve[-1][0]},
        "extra_metrics": {},
        "curve": [{"queries": q, "round": i + 1, "surrogate/acc": a, "surrogate/fidelity": a + 0.01,
                   "retrained_from_scratch": True} for i, (q, a) in enumerate(curve)],
        "config": {"seed": seed, "budget": budget, "label_mode": label_mode, "name": folder.name,
                   "output_dir": str(root), "victim": {"arch": "cnn", "epochs": victim_epochs},
                   "defense": {"class_path": f"x.{defense}", "init_args": defense_args or {}},
                   "attack": {"class_path": f"x.{attack}", "init_args": {"rounds": 3}}},
    }
    (folder / "results.json").write_text(json.dumps(payload))
    (folder / "config.yaml").write_text("{}\n")
    return folder


def row_of(rows, **match):
    found = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(r.defense, r.budget, r.attack) for r in rows])
    return found[0]


def test_queries_to_reach_is_the_bracket_between_checkpoints_never_interpolated():
    curve = [{"queries": 100, "surrogate/acc": 0.5}, {"queries": 200, "surrogate/acc": 0.7},
             {"queries": 400, "surrogate/acc": 0.9}]
    assert queries_to_reach(curve, 0.8) == (200.0, 400.0)  # somewhere in (200, 400]: not 200·√2
    assert queries_to_reach(curve, 0.9) == (200.0, 400.0)
    assert queries_to_reach(curve, 0.95) == (400.0, math.inf)  # never reached: a lower bound
    assert queries_to_reach(curve, 0.3) == (0.0, 100.0)  # the first checkpoint already reaches it


def test_checkpoints_sharing_a_query_count_read_as_the_last_one(tmp_path):
    # a surrogate evaluated twice at 100 queries (trained further without new queries): the attacker's model at
    # 100 queries is the later one (0.70), never the best; and no zero-width log-space segment (log(100/100) = 0)
    und = [{"queries": 100, "surrogate/acc": 0.60}, {"queries": 100, "surrogate/acc": 0.70},
           {"queries": 400, "surrogate/acc": 0.90}]
    assert value_at(und, 100) == pytest.approx(0.70)
    assert value_at(und, 200) == pytest.approx(0.80)  # halfway in log(queries) between 100 (0.70) and 400 (0.90)
    assert queries_to_reach(und, 0.65) == (0.0, 100.0)
    assert queries_to_reach(und, 0.80) == (100.0, 400.0)
    # the same curve against itself is at most 1x; a defended curve whose last checkpoint at 400 queries is 0.70
    # (an earlier one there was 0.75: not used) reaches the target 0.70 between 100 and 400 queries: [1, 4]x
    assert query_multiplier(und, und, 100, 0.70) == (0.0, pytest.approx(1.0))  # first checkpoint reaches it
    defended = [{"queries": 100, "surrogate/acc": 0.30}, {"queries": 400, "surrogate/acc": 0.75},
                {"queries": 400, "surrogate/acc": 0.70}]
    assert query_multiplier(und, defended, 100, 0.70) == (pytest.approx(1.0), pytest.approx(4.0))

    # and end to end through `build`, with the repeated checkpoint inside the runs' results.json
    for seed in (0, 1):
        write_run(tmp_path, seed=seed, budget=100, curve=[(100, 0.6), (100, 0.7)])
        write_run(tmp_path, defense="deceptive", seed=seed, budget=400, name=f"d{seed}",
                  curve=[(100, 0.3), (100, 0.3), (400, 0.75), (400, 0.7)])
        write_run(tmp_path, defense="deceptive", seed=seed, budget=100, curve=[(100, 0.3), (100, 0.3)])
    rows, problems = build([tmp_path])
    assert problems == []
    assert row_of(rows, defense="deceptive", budget=100).multiplier.summary() == (pytest.approx(1.0),
                                                                                   pytest.approx(4.0), "[]")


def test_query_multiplier_and_accuracy_drop_on_a_constructed_example(tmp_path):
    for seed in (0, 1):
        # undefended: 0.80 at budget 100 and 0.90 at budget 400
        write_run(tmp_path, seed=seed, budget=100, curve=[(100, 0.80)])
        write_run(tmp_path, seed=seed, budget=400, curve=[(100, 0.80), (200, 0.85), (400, 0.90)])
        # defended: reaches 0.80 exactly at 400 queries (both seeds): 4x at budget 100; never reaches 0.90
        write_run(tmp_path, defense="deceptive", seed=seed, budget=100, curve=[(100, 0.50)], kl=0.3)
        write_run(tmp_path, defense="deceptive", seed=seed, budget=400,
                  curve=[(100, 0.50), (200, 0.60), (400, 0.80)], kl=0.3)
    rows, problems = build([tmp_path])
    assert problems == []
    r100 = row_of(rows, defense="deceptive", budget=100)
    # reached between 200 and 400 queries: the bracket [2, 4]x, geometric mean over the seeds of each end
    assert r100.multiplier.summary() == (pytest.approx(2.0), pytest.approx(4.0), "[]")
    assert r100.acc_drop.mean == pytest.approx(0.30)
    assert r100.rank == 1 and row_of(rows, defense="none", budget=100).rank == 2  # lower attacker acc first
    r400 = row_of(rows, defense="deceptive", budget=400)
    low, high, bound = r400.multiplier.summary()
    assert bound == ">" and low == pytest.approx(1.0) and high is None  # the defended curve stops below 0.90
    assert r400.multiplier.fmt().startswith("> 1.00×")
    assert r400.acc_drop.mean == pytest.approx(0.10)

    # one seed crosses, the other does not: a lower bound on the mean, said as such
    write_run(tmp_path / "more", defense="deceptive", seed=2, budget=400, curve=[(100, 0.5), (400, 0.6)])
    write_run(tmp_path / "more", seed=2, budget=100, curve=[(100, 0.8)])
    rows, _ = build([tmp_path])
    r100 = row_of(rows, defense="deceptive", budget=100)
    assert r100.multiplier.summary()[2] == ">="
    assert "2/3 reached" in r100.multiplier.fmt()


def test_identical_non_monotone_curves_give_at_most_one(tmp_path):
    """A defense that changes nothing needs at most as many queries, even on a noisy curve that dips."""
    curve = [(100, 0.54), (200, 0.52), (400, 0.70), (800, 0.65), (1600, 0.67)]
    for budget in (400, 1600):
        write_run(tmp_path, budget=budget, curve=[p for p in curve if p[0] <= budget])
        write_run(tmp_path, defense="deceptive", budget=budget, curve=[p for p in curve if p[0] <= budget])
    rows, _ = build([tmp_path])
    for budget in (400, 1600):
        low, high, _ = row_of(rows, defense="deceptive", budget=budget).multiplier.summary()
        assert high == pytest.approx(1.0) and low < 1.0  # at most 1x: the crossing lies at or before the budget


def test_seeds_aggregate_as_mean_and_sample_std(tmp_path):
    accs = {0: 0.70, 1: 0.80, 2: 0.90}
    for seed, acc in accs.items():
        write_run(tmp_path, seed=seed, acc=acc)
        write_run(tmp_path, defense="deceptive", seed=seed, acc=acc - 0.2, kl=0.5)
    rows, problems = build([tmp_path])
    assert problems == [] and len(rows) == 2
    none = row_of(rows, defense="none")
    assert none.metric("surrogate/acc").mean == pytest.approx(0.80)
    assert none.metric("surrogate/acc").std == pytest.approx(0.10)  # sample std of .7, .8, .9
    assert none.metric("surrogate/acc").fmt() == "0.8000 ± 0.1000"
    deceptive = row_of(rows, defense="deceptive")
    assert deceptive.seeds == [0, 1, 2]
    assert deceptive.acc_drop.mean == pytest.approx(0.2) and deceptive.acc_drop.n == 3
    assert deceptive.rank == 1  # the attacker does worse against it


def test_defense_parameters_that_differ_label_the_rows(tmp_path):
    write_run(tmp_path, acc=0.9)
    for gamma, acc in ((0.1, 0.6), (0.5, 0.4)):
        write_run(tmp_path, defense="deceptive", acc=acc, defense_args={"beta": 1.0, "gamma": gamma},
                  name=f"dec{gamma}")
    rows, _ = build([tmp_path])
    assert [r.defense for r in rows] == ["deceptive(beta=1.0, gamma=0.5)", "deceptive(beta=1.0, gamma=0.1)", "none"]
    # runs that differ in another setting are never merged as seeds: the setting shows
    write_run(tmp_path, acc=0.7, victim_epochs=9, name="other_epochs")
    rows, problems = build([tmp_path])
    assert problems == []
    assert {r.setting for r in rows} == {"victim.epochs=3", "victim.epochs=9"}


def test_malformed_and_partial_folders_are_reported_and_not_averaged_in(tmp_path):
    write_run(tmp_path, seed=0, acc=0.6)
    write_run(tmp_path, seed=1, acc=0.8)
    failed = tmp_path / "failed_run"
    failed.mkdir()
    (failed / "config.yaml").write_text("{}\n")
    (failed / "error.txt").write_text("Traceback...\nRuntimeError: out of memory\n")
    partial = tmp_path / "still_running"
    partial.mkdir()
    (partial / "config.yaml").write_text("{}\n")
    broken = write_run(tmp_path, seed=2, acc=0.0, name="broken_json")
    (broken / "results.json").write_text('{"status": "complete", "identity": ')
    nan = write_run(tmp_path, seed=3, acc=0.0, name="nan_metric")
    payload = json.loads((nan / "results.json").read_text())
    payload["metrics"]["surrogate/acc"] = float("nan")
    (nan / "results.json").write_text(json.dumps(payload))
    running = write_run(tmp_path, seed=4, acc=0.0, name="status_running")
    payload = json.loads((running / "results.json").read_text())
    payload["status"] = "running"
    (running / "results.json").write_text(json.dumps(payload))
    nokey = write_run(tmp_path, seed=5, acc=0.0, name="no_identity_seed")
    payload = json.loads((nokey / "results.json").read_text())
    del payload["identity"]["seed"]
    (nokey / "results.json").write_text(json.dumps(payload))
    write_run(tmp_path / "copy", seed=1, acc=0.8)  # the same run twice: a duplicate, not a third seed
    (tmp_path / "wandb" / "offline-run-x").mkdir(parents=True)  # never mistaken for a run

    rows, problems = build([tmp_path])
    reasons = {Path(src).name: reason for src, reason in problems}
    assert "failed run" in reasons["failed_run"] and "out of memory" in reasons["failed_run"]
    assert "no results.json" in reasons["still_running"]
    assert "unreadable" in reasons["broken_json"]
    assert "surrogate/acc" in reasons["nan_metric"]
    assert "status" in reasons["status_running"]
    assert "seed" in reasons["no_identity_seed"]
    assert any("duplicate" in r for r in reasons.values())
    assert len(problems) == 7
    (row,) = rows
    assert row.seeds == [0, 1]
    assert row.metric("surrogate/acc").mean == pytest.approx(0.7)  # only the valid, distinct runs


def test_a_run_over_its_budget_is_refused_with_a_line_naming_it(tmp_path, capsys):
    write_run(tmp_path, seed=0, acc=0.6)
    over = write_run(tmp_path, seed=1, acc=0.99, name="over_budget")
    payload = json.loads((over / "results.json").read_text())
    payload["metrics"]["queries"] = payload["identity"]["budget"] + 1
    (over / "results.json").write_text(json.dumps(payload))
    rows, problems = build([tmp_path])
    assert [(Path(src).name, reason) for src, reason in problems] == [
        ("over_budget", "breaks the run contract: 401 queries exceed its budget of 400")]
    (row,) = rows
    assert row.seeds == [0]


def test_validate_results_rejects_missing_curve():
    with pytest.raises(MalformedRun, match="curve"):
        validate_results({"status": "complete", "identity": {k: 1 for k in (
            "data", "defense", "attack", "victim_arch", "surrogate_arch", "budget", "seed", "label_mode")},
            "metrics": {k: 0.5 for k in ("victim/acc", "victim/acc_defended", "defense/top1_changed",
                                         "defense/kl_nats", "defense/kl_nats_rev", "defense/l1", "surrogate/acc",
                                         "surrogate/fidelity", "queries")}, "curve": []}, "x")


def test_find_run_folders_accepts_a_run_folder_itself(tmp_path):
    folder = write_run(tmp_path, acc=0.5)
    assert find_run_folders([folder]) == [folder]
    assert find_run_folders([tmp_path]) == [folder]


def test_command_writes_markdown_csv_and_plots_without_lightning(tmp_path):
    for seed in (0, 1):
        for attack in ("jbda", "random"):
            write_run(tmp_path / "runs", seed=seed, attack=attack, budget=400,
                      curve=[(100, 0.6), (200, 0.75), (400, 0.85 + seed / 100)])
            write_run(tmp_path / "runs", defense="deceptive", seed=seed, attack=attack, budget=400,
                      curve=[(100, 0.4), (200, 0.5), (400, 0.62)], kl=0.4)
    out = tmp_path / "lb"
    code = ("import sys; from stealbench.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('lightning', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "leaderboard", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "attacker acc" in proc.stdout
    md = (out / "leaderboard.md").read_text()
    assert "| data | attack | labels | budget | rank | defense |" in md
    assert "> 1.00× (not reached)" in md
    with (out / "leaderboard.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and {r["defense"] for r in table} == {"none", "deceptive"}
    assert all(float(r["attacker_acc_std"]) >= 0 for r in table)
    for name in ("curves_digits_soft.png", "utility_digits_soft.png"):
        assert (out / name).stat().st_size > 10_000


def test_command_without_complete_runs_fails_clearly(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "error.txt").write_text("boom\n")
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "lb"), "--no-plots"]) == 2
    assert "no complete runs" in capsys.readouterr().err


class _FakeWandbRun:
    def __init__(self, acc: float, state: str = "finished") -> None:
        self.id, self.name, self.state, self.path = "abc123", "digits_none_jbda", state, ["me", "proj", "abc123"]
        self.config = {"data": "digits", "defense": "none", "attack": "jbda", "victim_arch": "cnn",
                       "surrogate_arch": "cnn", "budget": 200, "seed": 0, "label_mode": "soft",
                       "plugins": {}, "config": {"victim": {"epochs": 3}}}
        self.summary = {"victim/acc": 0.9, "victim/acc_defended": 0.9, "defense/top1_changed": 0.0,
                        "defense/kl_nats": 0.0, "defense/kl_nats_rev": 0.0, "defense/l1": 0.0, "surrogate/acc": acc,
                        "surrogate/fidelity": acc, "queries": 200, "_runtime": 3}

    def scan_history(self, keys):
        assert set(keys) == {"queries", "round", "surrogate/acc", "surrogate/fidelity"}
        return iter([{"queries": 100, "round": 1, "surrogate/acc": 0.5, "surrogate/fidelity": 0.5},
                     {"queries": 200, "round": 2, "surrogate/acc": self.summary["surrogate/acc"],
                      "surrogate/fidelity": 0.6}])


def test_runs_read_back_from_the_wandb_api_shape():
    run = run_from_wandb(_FakeWandbRun(0.7))
    assert run.identity["budget"] == 200 and run.metrics["surrogate/acc"] == 0.7
    assert [p["queries"] for p in run.curve] == [100, 200]
    assert run.source == "wandb:me/proj/abc123"
    with pytest.raises(MalformedRun, match="running"):
        run_from_wandb(_FakeWandbRun(0.7, state="running"))


def test_log_wandb_logs_the_table(tmp_path, monkeypatch, capsys):
    import wandb

    class FakeRun:
        url, dir = None, str(tmp_path / "wandb-run")

        def __init__(self, **kwargs):
            self.kwargs, self.logged, self.finished = kwargs, {}, False

        def log(self, data):
            self.logged.update(data)

        def finish(self):
            self.finished = True

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeRun(**kw)) or runs[-1])
    write_run(tmp_path / "runs", seed=0, acc=0.8)
    write_run(tmp_path / "runs", defense="deceptive", seed=0, acc=0.6)
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"), "--no-plots",
                 "--log-wandb", "me/proj"]) == 0
    assert "W&B:" in capsys.readouterr().out
    (run,) = runs
    assert run.kwargs["entity"] == "me" and run.kwargs["project"] == "proj"
    assert run.kwargs["job_type"] == "leaderboard" and run.finished
    table = run.logged["leaderboard"]
    assert isinstance(table, wandb.Table) and len(table.data) == 2
    assert table.columns[:6] == ["data", "attack", "labels", "budget", "rank", "defense"]
