"""The attacker's best response in the leaderboard: the strongest label mode of each cell, chosen on the seed mean,
compared with the undefended best response, and defenses ranked by it (their worst case)."""

from __future__ import annotations

import csv

import pytest

from fake_runs import fake_run
from stealbench.analysis.best_response import of_rows
from stealbench.analysis.leaderboard import build
from stealbench.cli import main

SEEDS = (0, 1, 2)


def _cell_runs(root, defense, accs_by_mode, params=None):
    for mode, accs in accs_by_mode.items():
        for seed, acc in zip(SEEDS, accs):
            fake_run(root, defense=defense, mode=mode, seed=seed, acc=acc, params=params)


def _best(rows, defense, budget=400):
    (best,) = {id(r.best): r.best for r in rows if r.defense == defense and r.budget == budget}.values()
    return best


def test_best_response_is_at_least_every_mode_and_is_chosen_on_the_seed_mean(tmp_path):
    # undefended: soft is its best response (0.9); hard and a mode this code has never heard of are weaker
    _cell_runs(tmp_path, "none", {"soft": [0.9, 0.9, 0.9], "hard": [0.85, 0.86, 0.84],
                                  "brand_new_mode": [0.8, 0.8, 0.8]})
    # defended: hard wins seed 0 by luck (0.7) but has the lower mean; the best mean is brand_new_mode's 0.6
    _cell_runs(tmp_path, "deceptive", {"soft": [0.5, 0.5, 0.5], "hard": [0.7, 0.3, 0.3],
                                       "brand_new_mode": [0.6, 0.6, 0.6]}, params={"beta": 1.0, "gamma": 0.2})
    rows, problems = build([tmp_path])
    assert problems == []
    best = _best(rows, "deceptive(beta=1.0, gamma=0.2)")
    assert best.mode == "brand_new_mode" and best.acc.values == [0.6, 0.6, 0.6]
    assert best.acc.mean == pytest.approx(0.6)  # a per-seed max would read (0.7 + 0.6 + 0.6) / 3
    assert all(best.acc.mean >= r.metric("surrogate/acc").mean for r in best.variants) and len(best.variants) == 3
    # paired by seed against the undefended best response (soft, 0.9), not against the same mode undefended
    assert best.acc_drop.values == pytest.approx([0.3, 0.3, 0.3])
    assert best.multiplier.summary()[2] == ">"  # the single-checkpoint defended curve never reaches 0.9
    base = _best(rows, "none")
    assert base.baseline and base.mode == "soft"

    out = tmp_path / "lb"
    assert main(["leaderboard", str(tmp_path), "--output_dir", str(out), "--no_plots"]) == 0
    with (out / "leaderboard.csv").open() as fh:
        table = list(csv.DictReader(fh))
    defended = [r for r in table if r["defense"].startswith("deceptive")]
    assert {r["label_mode"] for r in defended} == {"soft", "hard", "brand_new_mode"}
    for r in defended:  # every row of the cell carries the cell's best response beside its own numbers
        assert float(r["best_response_acc"]) == pytest.approx(0.6) and r["best_response_mode"] == "brand_new_mode"
        assert float(r["best_response_acc"]) >= float(r["attacker_acc_mean"]) - 1e-9
        assert float(r["best_response_acc_drop"]) == pytest.approx(0.3) and r["best_response_n_seeds"] == "3"
        assert r["best_response_acc_drop_pairs"] == "3"
    soft = next(r for r in defended if r["label_mode"] == "soft")
    assert float(soft["attacker_acc_mean"]) == pytest.approx(0.5)  # the non-adaptive number is never replaced
    assert float(soft["acc_drop_mean"]) == pytest.approx(0.4)


def test_defenses_are_ranked_by_their_worst_case(tmp_path, capsys):
    _cell_runs(tmp_path, "none", {"soft": [0.9] * 3, "invert": [0.88] * 3})
    # deceptive stops the soft attacker (0.3) but the inverting one gets 0.85; top-k holds both at 0.6
    _cell_runs(tmp_path, "deceptive", {"soft": [0.3] * 3, "invert": [0.85] * 3})
    _cell_runs(tmp_path, "topk", {"soft": [0.6] * 3, "invert": [0.55] * 3})
    rows, _ = build([tmp_path])
    soft_rank = {r.defense: r.rank for r in rows if r.label_mode == "soft"}
    assert soft_rank == {"deceptive": 1, "topk": 2, "none": 3}  # against the non-adaptive attacker
    assert [(b.defense, b.rank, b.mode) for b in of_rows(rows)] == [
        ("topk", 1, "soft"), ("deceptive", 2, "invert"), ("none", 3, "soft")]

    out = tmp_path / "lb"
    assert main(["leaderboard", str(tmp_path), "--output_dir", str(out), "--no_plots"]) == 0
    console = capsys.readouterr().out
    assert "ranked by their worst case" in console
    assert console.index("│ topk") < console.index("│ deceptive")  # the worst-case table comes first
    md = (out / "leaderboard.md").read_text()
    worst_case = md[md.index("## Defenses ranked by their worst case"):md.index("## Every attacker variant")]
    lines = [line for line in worst_case.splitlines() if line.startswith("| digits")]
    assert [line.split(" | ")[4] for line in lines] == ["topk", "deceptive", "none"]
    assert "| 0.8500 ± 0.0000 | invert |" in lines[1] and "| 0.3000 ± 0.0000 |" in lines[1]  # soft beside it


def test_a_cell_with_one_mode_has_that_mode_as_its_best_response(tmp_path):
    for seed, (und, dec) in enumerate(((0.9, 0.5), (0.8, 0.6))):
        fake_run(tmp_path, seed=seed, acc=und)
        fake_run(tmp_path, defense="deceptive", seed=seed, acc=dec)
    rows, _ = build([tmp_path])
    for row in rows:
        assert row.best.winner is row and row.best.mode == "soft"
        assert row.best.acc.values == row.metric("surrogate/acc").values
    dec = next(r for r in rows if r.defense == "deceptive")
    assert dec.best.acc_drop.values == pytest.approx(dec.acc_drop.values)
    assert dec.best.multiplier.per_seed == dec.multiplier.per_seed
    out = tmp_path / "lb"
    assert main(["leaderboard", str(tmp_path), "--output_dir", str(out), "--no_plots"]) == 0
    assert "worst case" not in (out / "leaderboard.md").read_text()  # one variant: one table is the ranking


def test_label_options_tell_variants_of_one_mode_apart_within_the_cell(tmp_path):
    fake_run(tmp_path, acc=0.9)
    fake_run(tmp_path, defense="deceptive", mode="invert", acc=0.8, label_options={"beta": 1.0, "gamma": 0.2})
    fake_run(tmp_path, defense="deceptive", mode="invert", acc=0.5, label_options={"beta": None, "gamma": None})
    fake_run(tmp_path, defense="deceptive", acc=0.4, label_options={})
    rows, problems = build([tmp_path])
    assert problems == [] and {r.setting for r in rows} == {""}  # options label the mode, not the setting
    best = _best(rows, "deceptive")
    assert sorted(r.label_mode for r in best.variants) == [
        "invert(beta=1.0, gamma=0.2)", "invert(beta=null, gamma=null)", "soft"]
    assert best.mode == "invert(beta=1.0, gamma=0.2)" and best.acc_drop.values == pytest.approx([0.1])


def test_query_multiplier_is_read_against_the_undefended_best_response(tmp_path):
    # undefended: hard is the stronger mode here (0.9 at 400 queries, soft 0.8)
    fake_run(tmp_path, mode="soft", curve=[(100, 0.5), (400, 0.8)])
    fake_run(tmp_path, mode="hard", curve=[(100, 0.6), (400, 0.9)])
    # defended, best response soft: reaches 0.9 (the undefended best at 400) only at 1,600 queries, after missing it
    # at 400: the crossing lies in (400, 1600], a multiplier bracket [1, 4] (never interpolated)
    fake_run(tmp_path, defense="deceptive", mode="soft", budget=400, curve=[(100, 0.4), (400, 0.7)])
    fake_run(tmp_path, defense="deceptive", mode="soft", budget=1600, curve=[(100, 0.4), (400, 0.7), (1600, 0.9)])
    fake_run(tmp_path, defense="deceptive", mode="hard", budget=400, curve=[(100, 0.3), (400, 0.6)])
    rows, _ = build([tmp_path])
    best = _best(rows, "deceptive")
    assert best.mode == "soft" and best.acc_drop.values == pytest.approx([0.2])
    assert best.multiplier.summary() == (pytest.approx(1.0), pytest.approx(4.0), "[]")


def test_log_wandb_gets_the_best_response_columns_and_table(tmp_path, monkeypatch):
    import wandb

    logged = {}

    class FakeRun:
        url, dir = None, str(tmp_path)

        def log(self, data):
            logged.update(data)

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    _cell_runs(tmp_path / "runs", "none", {"soft": [0.9] * 3, "hard": [0.8] * 3})
    _cell_runs(tmp_path / "runs", "deceptive", {"soft": [0.4] * 3, "hard": [0.7] * 3})
    assert main(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb"), "--no_plots",
                 "--log_wandb", "me/proj"]) == 0
    table = logged["leaderboard"]
    assert {"best_response_acc", "best_response_mode", "best_response_acc_drop", "best_response_query_multiplier_low",
            "best_response_n_seeds"} <= set(table.columns)
    col = table.columns.index("best_response_acc")
    mode = table.columns.index("best_response_mode")
    defended = [line for line in table.data if line[mode] == "hard" and line[col] == pytest.approx(0.7)]
    assert len(defended) == 2  # the soft and the hard row of the defended cell
    ranked = logged["best_response"]
    assert [line[ranked.columns.index("defense")] for line in ranked.data] == ["deceptive", "none"]
