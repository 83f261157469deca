"""`stealbench reproduce lee2018 --quick`: one report row per claim with numbers and a verdict; reruns resume."""

import json
import math
import os
import re

import pytest

from stealbench.analysis.claims import FIELDS, METRICS, Value
from stealbench.cli import main
from stealbench.analysis.runs import Run
from stealbench.analysis.records import run_records

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "not testable")


def claim_rows(report: str) -> list[list[str]]:
    rows = []
    for line in report.splitlines():
        if re.match(r"^\| \d+ \|", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append(cells)
    return rows


@pytest.mark.skipif(os.environ.get("STEALBENCH_SKIP_SLOW") == "1", reason="real runs (12 small digits runs)")
def test_quick_reproduction_reports_every_claim_and_resumes(tmp_path, one_thread, capsys):
    out = tmp_path / "lee2018"
    args = ["reproduce", "lee2018", "--quick", "--output_dir", str(out)]
    assert main(args) == 0
    report = (out / "REPORT.md").read_text()
    rows = claim_rows(report)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]  # one row per claim of the file, in order
    for number, claim, paper, setting, measured, test, verdict in rows:
        assert setting and test
        assert claim and paper
        assert re.search(r"\d\.\d\d", measured), f"claim {number} has no measured number: {measured}"
        assert "no measured setting" not in measured, f"claim {number} found no data: {measured}"
        assert any(f"{mark}**" in verdict for mark in VERDICTS), f"claim {number} has no verdict: {verdict}"
        assert " — " in verdict and len(verdict.split(" — ", 1)[1]) > 10  # and says why
    assert (out / "utility_sweep.png").exists() and list(out.glob("curves_*.png"))
    sweep = json.loads((out / "utility_sweep.json").read_text())
    for row in sweep:  # what the utility sweep measures is the vocabulary claims are checked against
        assert set(row) - {"data", "seed", "beta", "gamma"} <= set(METRICS["utility"]), set(row) - set(METRICS["utility"])
    results = sorted(out.glob("runs/*/results.json"))
    assert len(results) == 12

    # resume: a rerun runs only what is missing, leaves finished runs alone
    redo = results[3]
    redo.unlink()
    before = {p: p.stat().st_mtime_ns for p in results if p != redo}
    capsys.readouterr()
    assert main(args) == 0
    assert "11 already complete, 1 to run" in capsys.readouterr().out.replace("\n", " ")
    assert redo.exists()
    assert {p: p.stat().st_mtime_ns for p in before} == before
    resumed = (out / "REPORT.md").read_text()
    assert "1 runs run now, 11 already complete" in resumed

    # --report_only runs nothing, says so, and gives the same table from the same runs
    assert main([*args, "--report_only"]) == 0
    rebuilt = (out / "REPORT.md").read_text()
    assert "no run in this invocation" in rebuilt and "this invocation" not in rebuilt.replace("in this invocation", "")
    assert claim_rows(rebuilt) == claim_rows(resumed)


def _run(defense, seed, curve, label_mode="soft", gamma=0.2, pool=None):
    identity = {"data": "digits", "defense": defense, "attack": "jbda", "victim_arch": "cnn", "surrogate_arch": "cnn",
                "budget": curve[-1][0], "seed": seed, "label_mode": label_mode}
    config = {"defense": {"class_path": "x", "init_args": {"beta": 1.0, "gamma": gamma}}} if defense != "none" else {}
    if pool:  # an out-of-distribution attacker pool (--pool_data), as the runner records it
        identity["pool_data"] = pool
        config["pool_data"] = {"class_path": f"x.{pool}", "init_args": {"root": "/somewhere"}}
    metrics = {k: 0.0 for k in ("victim/acc", "victim/acc_defended", "defense/top1_changed", "defense/kl_nats",
                                "defense/kl_nats_rev", "defense/l1", "surrogate/fidelity", "queries")}
    metrics["surrogate/acc"] = curve[-1][1]
    return Run(f"/nonexistent/{defense}{seed}{label_mode}", identity, metrics,
               [{"queries": q, "round": i, "surrogate/acc": a, "surrogate/fidelity": a}
                for i, (q, a) in enumerate(curve)], config)


def test_records_keep_attacker_pools_apart_and_pair_each_with_its_own_baseline():
    runs = [_run("none", 0, [(100, 0.7)]), _run("deceptive", 0, [(100, 0.5)]),
            _run("none", 0, [(100, 0.4)], pool="fashion-mnist"), _run("deceptive", 0, [(100, 0.35)], pool="fashion-mnist")]
    records, problems = run_records(runs)
    assert not problems
    defended = {r.fields["pool"]: r for r in records if r.fields["defense"] == "deceptive"}
    assert sorted(defended) == ["fashion-mnist", "own"]
    # each pool's defended run against the undefended run of the same pool: 0.7 - 0.5 and 0.4 - 0.35
    assert defended["own"].metrics["acc_drop"].mean == pytest.approx(0.2)
    assert defended["fashion-mnist"].metrics["acc_drop"].mean == pytest.approx(0.05)
    assert "pool=fashion-mnist" in defended["fashion-mnist"].fields["setting"]
    assert "root" not in defended["fashion-mnist"].fields["setting"]  # where the pool lives is not a setting
    # a grid without other pools keeps its settings unlabelled
    alone, _ = run_records(runs[:2])
    assert all(r.fields["pool"] == "own" and r.fields["setting"] == "" for r in alone)
    # a run written after --oracle.* existed (its defaults in config.yaml) is the same setting as one before
    later = _run("deceptive", 1, [(100, 0.45)])
    later.config["oracle"] = {"url": None, "model_name": "victim", "timeout": 30.0}
    mixed, problems = run_records([_run("none", 0, [(100, 0.7)]), _run("none", 1, [(100, 0.6)]),
                                   _run("deceptive", 0, [(100, 0.5)]), later])
    assert not problems and {r.fields["setting"] for r in mixed} == {""}


def test_utility_records_keep_each_data_set_apart(tmp_path, monkeypatch):
    # a reproduction with a second victim data set (lee2018's Fashion-MNIST victims) must not pool their utility
    # sweeps with the first's: one record per data set, each over its own victims only
    from stealbench.analysis import utility_sweep
    from stealbench.analysis.claims_spec import SweepSpec
    from stealbench.analysis.report import claim_records

    runs = []
    for data in ("mnist", "fashion-mnist"):
        for seed in (0, 1):
            run = _run("none", seed, [(100, 0.7)])
            run.identity["data"] = data
            folder = tmp_path / f"{data}{seed}"
            folder.mkdir()
            runs.append(Run(str(folder), run.identity, run.metrics, run.curve, run.config))
    kl = {"mnist": 1.0, "fashion-mnist": 3.0}
    monkeypatch.setattr(utility_sweep, "victims_of",
                        lambda folders: [(r.identity["seed"], {"identity": r.identity}) for r in runs])
    monkeypatch.setattr(utility_sweep, "sweep_victim", lambda payload, spec: [
        {"beta": 1.0, "gamma": 0.2, "acc": 0.9, "acc_defended": 0.9, "kl_nats": kl[payload["identity"]["data"]]}])
    records, _, _, raw = claim_records(runs, SweepSpec("deceptive", {"beta": [1.0], "gamma": [0.2]}))
    utility = {r.fields["data"]: r for r in records if r.source == "utility"}
    assert sorted(utility) == ["fashion-mnist", "mnist"]
    assert utility["mnist"].metrics["kl_nats"].mean == 1.0 and utility["mnist"].metrics["kl_nats"].n == 2
    assert utility["fashion-mnist"].metrics["kl_nats"].mean == 3.0
    assert {row["data"] for row in raw} == {"mnist", "fashion-mnist"}
    assert utility["mnist"].label.startswith("mnist: ")  # two data sets: the report's rows say which is which
    labels = {r.label for r in records if r.source == "runs"}
    assert any(label.startswith("fashion-mnist: ") for label in labels), labels


def test_records_pair_by_seed_at_every_checkpoint():
    runs = [_run("none", 0, [(100, 0.5), (200, 0.6), (400, 0.7)]),
            _run("none", 1, [(100, 0.4), (200, 0.6), (400, 0.8)]),
            _run("deceptive", 0, [(100, 0.3), (200, 0.5), (400, 0.6)]),
            _run("deceptive", 1, [(100, 0.4), (200, 0.5), (400, 0.55)]),
            _run("deceptive", 0, [(100, 0.45), (200, 0.6), (400, 0.7)], label_mode="hard"),
            _run("deceptive", 1, [(100, 0.4), (200, 0.6), (400, 0.8)], label_mode="hard")]
    records, problems = run_records(runs)
    assert not problems
    soft = {r.fields["budget"]: r for r in records if r.fields["defense"] == "deceptive"
            and r.fields["label_mode"] == "soft"}
    assert sorted(soft) == [100, 200, 400] and soft[100].fields["gamma"] == 0.2
    drop = soft[100].metrics["acc_drop"]
    assert drop.n == 2 and drop.mean == pytest.approx((0.2 + 0.0) / 2)  # paired: seed 0 0.5-0.3, seed 1 0.4-0.4
    assert soft[400].metrics["acc_drop_relative"].mean == pytest.approx((0.1 / 0.7 + 0.25 / 0.8) / 2)
    # error-rate amplification, paired: seed 0 (1 - 0.6) / (1 - 0.7), seed 1 (1 - 0.55) / (1 - 0.8); a
    # multiplier, so the geometric mean; its ceiling 1 / (1 - a0) is the larger of 1 / 0.3 and 1 / 0.2
    err = soft[400].metrics["error_multiplier"]
    assert err.mean == pytest.approx(math.sqrt(0.4 / 0.3 * 0.45 / 0.2)) and err.ceiling == pytest.approx(5.0)
    # multiplier at 200: seed 0 reaches 0.6 between 200 and 400 ([1, 2]x), seed 1 never within 400 (> 2x)
    mult = soft[200].metrics["query_multiplier"]
    assert mult.values == [1.0, 2.0] and mult.highs == [2.0, math.inf]
    assert mult.bound == ">=" and mult.mean == pytest.approx(math.sqrt(2.0)) and mult.ceiling == 2.0
    # at the last checkpoint there is no budget left to measure a multiplier with
    assert "query_multiplier" not in soft[400].metrics
    # the hard-label attacker under the same defense beats the soft one by 0.1 (seed 0) and 0.25 (seed 1) at 400
    assert soft[400].metrics["hard_advantage"].mean == pytest.approx((0.1 + 0.25) / 2)
    assert isinstance(soft[400].metrics["surrogate_acc"], Value)
    # the vocabulary claims are checked against (a metric outside it is refused when a claims file is read)
    for r in records:
        assert set(r.metrics) <= set(METRICS["runs"]), set(r.metrics) - set(METRICS["runs"])
        assert set(FIELDS["runs"]) <= set(r.fields) <= set(FIELDS["runs"]) | {"beta", "gamma"}


def test_unknown_paper_and_bad_claims_stop_with_one_message(tmp_path, capsys):
    assert main(["reproduce", "lee2019"]) == 2
    assert "no reproduction 'lee2019'. Did you mean 'lee2018'? Known: lee2018" in capsys.readouterr().err
    path = tmp_path / "mine.yaml"
    path.write_text("data: [digits]\ndefenses: [none]\nattacks: [random]\nbudgets: [100]\n"
                    "fixed: {date: 2026-12-03, commit: 58109f7}\n"
                    "claims: [{id: a, parts: [{metric: acc_drop, primary: {defense: none}, at_least: 1, "
                    "compare: '>>'}]}]\n")
    assert main(["reproduce", str(path), "--dry_run"]) == 2
    assert "claim 'a' part 0: `compare:` is no longer supported" in capsys.readouterr().err
    path.write_text(path.read_text().replace(", compare: '>>'", "").replace("fixed: {date: 2026-12-03, commit: "
                                                                            "58109f7}\n", ""))
    assert main(["reproduce", str(path), "--dry_run"]) == 2
    assert "needs `fixed: {date: YYYY-MM-DD, commit: HASH}`" in capsys.readouterr().err


def test_dry_run_lists_the_full_grid(capsys):
    assert main(["reproduce", "lee2018", "--dry_run", "--output_dir", "somewhere"]) == 0
    out = capsys.readouterr().out
    # 50 + the best response (invert vs beta 1, gamma 0.2) + natural samples from Fashion-MNIST vs none and gamma 0.2
    # + the other way round: a Fashion-MNIST victim, natural samples from its own pool and from MNIST (none, gamma 0.2)
    assert "# 85 runs; output somewhere" in out
    assert "--data fashion-mnist --defense none --attack random --pool_data mnist" in out
    assert "--name mnist-pool-mnist_" not in out and "--name fashion-mnist-pool-fashion-mnist_" not in out  # no
    # victim's out-of-distribution pool is its own data set
    assert "--pool_data fashion-mnist --pool_data.root ../shared/data" in out
    assert "--name mnist-pool-fashion-mnist_rs-b1-g0.2_random_soft_b5000_s4" in out
    assert "--output_dir somewhere/runs --name mnist_rs-b1-g0.2_jbda_hard_b6400_s2" in out
