"""`stealbench tradeoff`: security against cost over a swept defense knob, and defenses at equal cost."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from fake_runs import fake_run
from stealbench.analysis.best_response import of_rows
from stealbench.analysis.leaderboard import build
from stealbench.analysis.tradeoff import equal_cost, knobs_of, points_of
from stealbench.cli import main

# (gamma, benign accuracy drop, defense/l1, soft acc, invert acc): the inverting attacker is the best response
SWEEP = ((0.1, 0.00, 0.10, 0.75, 0.80), (0.2, 0.01, 0.20, 0.40, 0.60), (0.5, 0.04, 0.60, 0.20, 0.30))


def _sweep(root, seeds=(0, 1)):
    for seed in seeds:
        for mode, acc in (("soft", 0.9), ("invert", 0.88)):
            fake_run(root, mode=mode, seed=seed, acc=acc)
        for gamma, drop, l1, soft, invert in SWEEP:
            for mode, acc in (("soft", soft), ("invert", invert)):
                fake_run(root, defense="deceptive", mode=mode, seed=seed, acc=acc, benign_drop=drop, l1=l1,
                         params={"beta": 1.0, "gamma": gamma})
        # a defense run at one setting still takes part, with that setting
        for mode in ("soft", "invert"):
            fake_run(root, defense="topk", mode=mode, seed=seed, acc=0.7, benign_drop=0.0, l1=0.4, params={"k": 1})


def test_equal_cost_picks_each_defenses_best_setting_within_the_level(tmp_path):
    _sweep(tmp_path)
    rows, _ = build([tmp_path])
    points = points_of(of_rows(rows))
    knobs = knobs_of(points)
    assert knobs[("digits", "jbda", "", 400, "deceptive")] == ["gamma"]
    assert knobs[("digits", "jbda", "", 400, "topk")] == []
    entries = equal_cost(points, {"benign_acc_drop": (0.0, 0.01, 0.05), "tv": (0.04, 0.1, 0.2)})
    chosen = {(e.cost, e.level, e.defense_key): (e.chosen.best.defense if e.chosen else None, e.rank)
              for e in entries}
    g = "deceptive(beta=1.0, gamma={})".format
    # free (no benign accuracy lost): deceptive only at gamma 0.1 (best response 0.8), top-k (0.7) ranks first
    assert chosen[("benign_acc_drop", 0.0, "deceptive")] == (g(0.1), 2)
    assert chosen[("benign_acc_drop", 0.0, "topk")] == ("topk(k=1)", 1)
    # 1 point of accuracy buys gamma 0.2: 0.6 against the inverting attacker (0.4 soft: not what counts)
    assert chosen[("benign_acc_drop", 0.01, "deceptive")] == (g(0.2), 1)
    assert chosen[("benign_acc_drop", 0.05, "deceptive")] == (g(0.5), 1)
    # total variation = l1 / 2: 0.04 admits no setting; 0.1 admits gamma 0.2 exactly; 0.2 admits top-k (0.2)
    assert chosen[("tv", 0.04, "deceptive")] == (None, 0) and chosen[("tv", 0.04, "topk")] == (None, 0)
    assert chosen[("tv", 0.1, "deceptive")] == (g(0.2), 1) and chosen[("tv", 0.1, "topk")] == (None, 0)
    assert chosen[("tv", 0.2, "topk")] == ("topk(k=1)", 2)
    entry = next(e for e in entries if (e.cost, e.level, e.defense_key) == ("benign_acc_drop", 0.01, "deceptive"))
    assert entry.chosen.best.acc.mean == pytest.approx(0.6) and entry.chosen.best.mode == "invert"
    assert entry.chosen.best.acc_drop.values == pytest.approx([0.3, 0.3])  # vs the undefended best (soft 0.9)
    assert (entry.within, entry.settings) == (2, 3)


def test_tradeoff_command_writes_the_plot_and_tables_without_heavy_imports(tmp_path):
    _sweep(tmp_path / "runs")
    out = tmp_path / "to"
    code = ("import sys; from stealbench.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('lightning', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "tradeoff", str(tmp_path / "runs"), "--output_dir", str(out),
                           "--benign_acc_drop_levels", "0.01", "--tv_levels", "0.1", "0.3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "knobs swept: deceptive (gamma)" in proc.stdout
    assert (out / "tradeoff_digits_b400.png").stat().st_size > 10_000
    with (out / "equal_cost.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 * 2  # (1 + 2 levels) x 2 defenses
    first = [r for r in table if r["rank"] == "1"]
    assert [(r["cost"], r["level"], r["chosen setting"]) for r in first] == [
        ("benign_acc_drop", "≤ 0.01", "deceptive(beta=1.0, gamma=0.2)"),
        ("tv", "≤ 0.1", "deceptive(beta=1.0, gamma=0.2)"), ("tv", "≤ 0.3", "deceptive(beta=1.0, gamma=0.5)")]
    with (out / "tradeoff.csv").open() as fh:
        points = list(csv.DictReader(fh))
    g05 = next(p for p in points if p["knobs"] == "gamma=0.5")
    assert float(g05["tv"]) == pytest.approx(0.3) and float(g05["benign_acc_drop"]) == pytest.approx(0.04)
    assert float(g05["best_response_acc"]) == pytest.approx(0.3) and float(g05["soft_acc"]) == pytest.approx(0.2)
    assert "## Defenses at equal cost" in (out / "tradeoff.md").read_text()


def test_leaderboard_compares_at_equal_cost_and_logs_the_tables_to_wandb(tmp_path, monkeypatch):
    import wandb

    logged = {}

    class FakeRun:
        url, dir = None, str(tmp_path)

        def log(self, data):
            logged.update(data)

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    _sweep(tmp_path / "runs", seeds=(0,))
    assert main(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb"), "--no_plots",
                 "--log_wandb", "me/proj"]) == 0
    assert "## Defenses at equal cost" in (tmp_path / "lb" / "leaderboard.md").read_text()
    assert {"leaderboard", "best_response", "tradeoff", "equal_cost"} <= set(logged)
    tradeoff = logged["tradeoff"]
    assert isinstance(tradeoff, wandb.Table) and len(tradeoff.data) == 5  # none, 3 gammas, top-k
    logged.clear()
    assert main(["tradeoff", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "to"), "--no_plots",
                 "--log_wandb", "me/proj"]) == 0
    assert set(logged) == {"tradeoff", "equal_cost"}


def test_bad_input_gets_one_clear_line(tmp_path, capsys):
    fake_run(tmp_path / "one", acc=0.9)
    assert main(["tradeoff", str(tmp_path / "one"), "--output_dir", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: only 1 complete run") and err.count("\n") == 1

    for seed in (0, 1):
        fake_run(tmp_path / "flat", seed=seed, acc=0.9)
        fake_run(tmp_path / "flat", defense="deceptive", seed=seed, acc=0.5, params={"beta": 1.0, "gamma": 0.2})
    assert main(["tradeoff", str(tmp_path / "flat"), "--output_dir", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "no defense knob is swept" in err and "deceptive(beta=1.0, gamma=0.2)" in err and err.count("\n") == 1
    assert not (tmp_path / "o2").exists()  # nothing written

    _sweep(tmp_path / "runs", seeds=(0,))
    assert main(["tradeoff", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "o3"), "--budget", "999"]) == 2
    assert "no runs at budget 999; budgets run: 400" in capsys.readouterr().err
    assert main(["tradeoff", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "o4"), "--tv_levels", "-1"]) == 2
    assert "--tv_levels must be costs >= 0" in capsys.readouterr().err
    # the leaderboard itself never needs a sweep: no equal-cost section, no error
    assert main(["leaderboard", str(tmp_path / "flat"), "--output_dir", str(tmp_path / "lb"), "--no_plots"]) == 0
    assert "equal cost" not in (tmp_path / "lb" / "leaderboard.md").read_text()
