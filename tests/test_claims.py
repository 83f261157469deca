"""Claims decided at one primary setting by inference over seeds: parsing, intervals, Holm, TOST, bounds, verdicts.

Every computed figure is checked against scipy.stats directly or a value worked out by hand (no runs needed)."""

import math

import numpy as np
import pytest
from scipy import stats as st

from stealbench.analysis import stats
from stealbench.analysis.claims import Record, Value, parse_claims
from stealbench.analysis.curves import Multiplier
from stealbench.analysis.verdicts import combine, evaluate
from stealbench.errors import ConfigError


def rec(gamma, budget, **metrics):
    return Record("runs", {"attack": "jbda", "label_mode": "soft", "defense": "deceptive", "gamma": gamma,
                           "budget": budget}, metrics, f"g{gamma}@{budget}")


def claim(*parts):
    return parse_claims([{"id": "c", "text": "t", "paper": "p", "parts": list(parts)}])


def part(**kw):
    return {"metric": "acc_drop", "primary": {"gamma": 0.2}, **kw}


def verdict(claims, records):
    return evaluate(claims, records)[0]


# ------------------------------------------------------------------------------------------- statistics vs scipy

def test_t_interval_matches_scipy_and_a_hand_computation():
    x = [0.21, 0.25, 0.19, 0.30, 0.24]
    iv = stats.t_interval(x)
    lo, hi = st.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert (iv.lo, iv.hi) == (pytest.approx(lo), pytest.approx(hi))
    # by hand: mean 0.238, squared deviations sum to 0.00708, sd = sqrt(0.00708 / 4) = 0.0420714, t(0.975, 4) = 2.776445
    half = 2.776445 * 0.0420714 / math.sqrt(5)
    assert iv.lo == pytest.approx(0.238 - half, abs=1e-5) and iv.hi == pytest.approx(0.238 + half, abs=1e-5)
    assert stats.t_interval([0.5]).lo == -math.inf  # one seed: no interval


def test_one_sided_p_and_tost_match_scipy():
    x = [0.21, 0.25, 0.19, 0.30, 0.24]
    assert stats.p_greater(x, 0.2) == pytest.approx(st.ttest_1samp(x, 0.2, alternative="greater").pvalue)
    assert stats.p_less(x, 0.2) == pytest.approx(st.ttest_1samp(x, 0.2, alternative="less").pvalue)
    # TOST: the larger of the two one-sided p-values at the margin's ends
    d = [0.004, -0.003, 0.001, 0.002, -0.001]
    lower = st.ttest_1samp(d, -0.01, alternative="greater").pvalue
    upper = st.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert stats.tost_p(d, 0.0, 0.01) == pytest.approx(max(lower, upper))


def test_holm_adjustment_by_hand():
    # sorted p 0.01, 0.02, 0.04 -> 3*0.01 = 0.03, max(0.03, 2*0.02) = 0.04, max(0.04, 1*0.04) = 0.04
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone


def test_multipliers_are_geometric_means_with_log_intervals():
    v = Value([2.0, 8.0], [2.0, 8.0], "×")
    assert v.mean == pytest.approx(4.0)  # not the arithmetic 5
    logs = [math.log(2), math.log(8)]
    lo, hi = st.t.interval(0.95, 1, loc=np.mean(logs), scale=st.sem(logs))
    assert (v.interval().lo, v.interval().hi) == (pytest.approx(math.exp(lo)), pytest.approx(math.exp(hi)))


def test_mixed_bounds_give_no_bound_and_brackets_are_reported_as_brackets():
    assert Multiplier([(0, 2.0, math.inf), (1, 0.0, 0.5)]).summary() == (None, None, "none")
    assert Value([2.0, 0.0], [math.inf, 0.5], "×").bound == "none"
    assert Value([2.0, 0.0], [math.inf, 0.5], "×").interval().lo == 0.0
    m = Multiplier([(0, 2.0, 4.0), (1, 2.0, 4.0)])
    assert m.summary() == (pytest.approx(2.0), pytest.approx(4.0), "[]") and m.fmt() == "[2.00, 4.00]×"
    assert Multiplier([(0, 4.0, 4.0), (1, 16.0, math.inf)]).summary()[2] == ">="
    assert "crossing between checkpoints" in Value([2.0, 2.0], [4.0, 4.0], "×").fmt()


# ------------------------------------------------------------------------------------------------------ parsing

def test_parse_errors_are_one_line_and_name_the_claim_and_key():
    with pytest.raises(ConfigError, match="unknown keys \\['atleast'\\]"):
        claim(part(atleast=0.2))
    with pytest.raises(ConfigError, match="needs `primary:`"):
        claim({"metric": "acc_drop", "at_least": 0.2})
    with pytest.raises(ConfigError, match="margin must be > 0"):
        claim(part(equivalent={"to": 0.0, "margin": 0}))
    with pytest.raises(ConfigError, match="exactly one of at_least, at_most, equivalent"):
        claim(part(at_least=0.1, at_most=0.3))
    with pytest.raises(ConfigError, match="`over:` is no longer supported"):
        claim(part(at_least=0.2, over="any"))
    with pytest.raises(ConfigError, match="`checks:` is the old form"):
        parse_claims([{"id": "a", "checks": []}])
    with pytest.raises(ConfigError, match="runs records have no metric 'acc_dorp'. Did you mean 'acc_drop'"):
        claim({**part(at_least=0.2), "metric": "acc_dorp"})
    with pytest.raises(ConfigError, match="appears twice"):
        parse_claims([{"id": "a", "parts": [part(at_least=1)]}] * 2)


# ----------------------------------------------------------------------------------------------------- verdicts

def test_only_the_primary_setting_decides():
    """One of several settings passes, the primary fails: not reproduced (the old `over: any` said reproduced)."""
    records = [rec(0.1, 100, acc_drop=Value([0.05, 0.06, 0.04])), rec(0.2, 100, acc_drop=Value([0.05, 0.04, 0.06])),
               rec(0.5, 100, acc_drop=Value([0.40, 0.41, 0.39]))]
    res = verdict(claim(part(at_least=0.2, secondary={"defense": "deceptive"})), records)
    assert res.verdict == "not reproduced"
    assert [b.record.get("gamma") for b in res.parts[0].secondary] == [0.1, 0.5]
    assert res.parts[0].secondary[1].verdict == "reproduced"  # reported, never deciding


def test_a_primary_naming_several_settings_is_refused():
    records = [rec(0.1, 100, acc_drop=Value([0.3, 0.3])), rec(0.2, 100, acc_drop=Value([0.3, 0.3]))]
    with pytest.raises(ConfigError, match="selects 2 settings"):
        evaluate(claim({**part(at_least=0.2), "primary": {"defense": "deceptive"}}), records)


def test_interval_inside_outside_straddling():
    holds = [rec(0.2, 100, acc_drop=Value([0.30, 0.32, 0.31, 0.29, 0.33]))]
    assert verdict(claim(part(at_least=0.2)), holds).verdict == "reproduced"
    fails = [rec(0.2, 100, acc_drop=Value([0.10, 0.12, 0.11, 0.09, 0.13]))]
    assert verdict(claim(part(at_least=0.2)), fails).verdict == "not reproduced"
    straddles = [rec(0.2, 100, acc_drop=Value([0.10, 0.30, 0.15, 0.35, 0.20]))]
    assert verdict(claim(part(at_least=0.2)), straddles).verdict == "inconclusive"


def test_every_budget_uses_holm_and_fails_on_one_budget():
    # each budget alone: p = 0.02 < 0.025, but Holm over two budgets needs the smaller below 0.0125
    x = [0.25, 0.27, 0.23, 0.30, 0.21]
    p = st.ttest_1samp(x, 0.2, alternative="greater").pvalue
    assert 0.0125 < p < 0.025
    records = [rec(0.2, 100, acc_drop=Value(x)), rec(0.2, 200, acc_drop=Value(x))]
    res = verdict(claim(part(at_least=0.2)), records)
    assert [b.p_holds for b in res.parts[0].budgets] == pytest.approx([2 * p, 2 * p])
    assert res.verdict == "inconclusive"
    assert verdict(claim(part(at_least=0.2)), records[:1]).verdict == "reproduced"
    records.append(rec(0.2, 400, acc_drop=Value([0.0, 0.01, 0.02, 0.01, 0.0])))
    assert verdict(claim(part(at_least=0.2)), records).verdict == "not reproduced"


def test_a_noisier_equivalence_does_not_pass_more_easily():
    x = [0.004, -0.003, 0.001, 0.002, -0.001]
    spread = [0.0006 + 10 * (v - 0.0006) for v in x]  # same mean, ten times the standard deviation
    tight, noisy = [rec(0.2, 100, acc_drop=Value(x))], [rec(0.2, 100, acc_drop=Value(spread))]
    assert stats.mean(x) == pytest.approx(stats.mean(spread)) == pytest.approx(0.0006)
    eq = part(equivalent={"to": 0.0, "margin": 0.01})
    assert verdict(claim(eq), tight).verdict == "reproduced"
    # the margin stays 0.01 (the old within_noise widened it to 2 s.e.): the noisier data cannot pass
    assert verdict(claim(eq), noisy).verdict == "inconclusive"


def test_a_lower_bound_at_the_ceiling_is_not_testable():
    # 6,400 / 100 = 64: every seed "> 64x" cannot tell 64 from infinity
    mult = Value([64.0, 64.0, 64.0], [math.inf] * 3, "×", ceiling=64.0)
    records = [rec(0.2, 100, query_multiplier=mult)]
    res = verdict(claim({**part(at_least=64), "metric": "query_multiplier"}), records)
    assert res.verdict == "not testable" and "ceiling" in res.why
    # below the ceiling the same lower bounds do show the claim
    assert verdict(claim({**part(at_least=16), "metric": "query_multiplier"}), records).verdict == "reproduced"
    # the error multiplier cannot exceed 1 / (1 - a0): 85x against a0 = 0.85 (ceiling 6.7x) is not testable
    err = Value([3.0, 3.5], [3.0, 3.5], "×", ceiling=1 / 0.15)
    res = verdict(claim({**part(at_least=85), "metric": "error_multiplier"}), [rec(0.2, 100, error_multiplier=err)])
    assert res.verdict == "not testable"


def test_up_to_is_the_largest_budget_with_its_interval():
    records = [rec(0.2, 100, query_multiplier=Value([2.0, 2.0, 2.2], [4.0, 4.0, 4.4], "×", 64.0)),
               rec(0.2, 200, query_multiplier=Value([8.0, 9.0, 8.5], [16.0, 18.0, 17.0], "×", 32.0))]
    up_to = {**part(at_least=6), "metric": "query_multiplier", "budgets": "max"}
    res = verdict(claim(up_to), records)
    assert res.verdict == "reproduced" and res.parts[0].deciding.record.get("budget") == 200
    # a bracket that straddles the claimed value is inconclusive
    assert verdict(claim({**up_to, "at_least": 12}), records).verdict == "inconclusive"


def test_no_spread_is_judged_by_the_point_itself_bounds_included():
    zero = [rec(0.2, 100, top1_changed=Value([0.0, 0.0, 0.0]))]
    assert verdict(claim({**part(at_most=0.0), "metric": "top1_changed"}), zero).verdict == "reproduced"
    some = [rec(0.2, 100, top1_changed=Value([0.01, 0.01, 0.01]))]
    assert verdict(claim({**part(at_most=0.0), "metric": "top1_changed"}), some).verdict == "not reproduced"


def test_parts_combine_into_partly_only_when_some_hold_and_some_fail():
    assert combine(["reproduced", "not reproduced"]) == "partly"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["not reproduced", "inconclusive"]) == "not reproduced"
    assert combine(["not testable", "not testable"]) == "not testable"
    records = [rec(0.2, 100, acc_drop=Value([0.30, 0.32, 0.31]), surrogate_acc=Value([0.5, 0.52, 0.51]))]
    res = verdict(claim(part(at_least=0.2), {**part(at_least=0.6), "metric": "surrogate_acc"}), records)
    assert res.verdict == "partly"


def test_a_part_that_selects_nothing_is_not_checked_and_says_which_field_matched_nothing():
    records = [rec(0.2, 100, acc_drop=Value([0.3, 0.3]))]
    res = verdict(claim({**part(at_least=0.2), "primary": {"attack": "random"}}), records)
    assert res.verdict == "not checked"
    assert "no runs record with attack random; values measured: jbda" in res.why


# ------------------------------------------------------------------------------------------- the best response

def test_a_part_with_a_best_response_is_judged_there_too_beside_the_fixed_verdict():
    """The non-adaptive attacker shows the drop, the best response erases it: the fixed verdict stands and the
    claim against the best response says not reproduced."""
    soft = rec(0.2, 100, acc_drop=Value([0.30, 0.32, 0.31]))
    best = Record("runs", {**soft.fields, "label_mode": "invert"}, {"acc_drop": Value([0.01, 0.02, 0.00])}, "inv")
    soft_primary = {"gamma": 0.2, "label_mode": "soft"}
    res = verdict(claim(part(at_least=0.2, primary=soft_primary, best_response={"label_mode": "invert"})),
                  [soft, best])
    assert res.verdict == "reproduced"
    assert res.best_response_verdict == "not reproduced"
    assert res.best_response[0].budgets[0].record is best
    # without the key nothing is judged against a best response
    assert verdict(claim(part(at_least=0.2, primary=soft_primary)), [soft, best]).best_response_verdict is None


def test_best_response_parse_errors():
    with pytest.raises(ConfigError, match="best_response"):
        claim(part(at_least=0.2, best_response="invert"))
    with pytest.raises(ConfigError, match="utility records have no attacker"):
        claim({"metric": "acc_change", "source": "utility", "primary": {"gamma": 0.2}, "at_most": 0.0,
               "best_response": {"label_mode": "invert"}})


def test_an_adaptive_mode_is_paired_with_the_undefended_soft_attacker(tmp_path):
    """records: the invert attacker has no undefended runs of its own; its drop and hard_advantage come from the
    soft-label baseline and the hard-label attacker at the same seed and budget."""
    from fake_runs import fake_run

    from stealbench.analysis.records import run_records
    from stealbench.analysis.runs import load_folders

    rs = {"beta": 1.0, "gamma": 0.2}
    for seed, (a0, a_inv, a_hard) in enumerate([(0.90, 0.85, 0.80), (0.92, 0.88, 0.81)]):
        fake_run(tmp_path, seed=seed, acc=a0)
        fake_run(tmp_path, defense="deceptive", params=rs, seed=seed, acc=0.5)
        fake_run(tmp_path, defense="deceptive", params=rs, mode="invert", label_options=rs, seed=seed, acc=a_inv)
        fake_run(tmp_path, defense="deceptive", params=rs, mode="hard", seed=seed, acc=a_hard)
        fake_run(tmp_path, mode="hard", seed=seed, acc=a_hard + 0.01)
    runs, problems = load_folders([tmp_path])
    assert not problems
    records, _ = run_records(runs)
    inv = [r for r in records if str(r.get("label_mode")).startswith("invert")]
    assert len(inv) == 1 and inv[0].get("baseline_label_mode") == "soft"
    assert inv[0].metrics["acc_drop"].values == pytest.approx([0.05, 0.04])
    assert inv[0].metrics["hard_advantage"].values == pytest.approx([-0.05, -0.07])
    assert "none (soft)" in inv[0].context
    hard = [r for r in records if r.get("label_mode") == "hard" and r.get("defense") == "deceptive"]
    assert hard[0].get("baseline_label_mode") == "hard"  # the hard attacker keeps its own baseline


def test_a_primary_without_a_pool_is_decided_by_the_victims_own_pool():
    own = rec(0.2, 100, acc_drop=Value([0.30, 0.32, 0.31]))
    own.fields["pool"] = "own"
    ood = rec(0.2, 100, acc_drop=Value([0.01, 0.00, 0.02]))
    ood.fields["pool"] = "fashion-mnist"
    c = claim(part(at_least=0.2, secondary={"gamma": 0.2}))
    result = verdict(c, [own, ood])
    assert result.verdict == "reproduced"  # the out-of-distribution setting neither decides nor makes two settings
    named = claim(part(at_least=0.2, primary={"gamma": 0.2, "pool": "fashion-mnist"}))
    assert verdict(named, [own, ood]).verdict == "not reproduced"
