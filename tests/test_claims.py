"""Declarative claims: parsing errors, comparisons, bounds, verdicts (no runs needed)."""

import pytest

from stealbench.analysis.claims import Record, Value, parse_claims
from stealbench.analysis.verdicts import evaluate
from stealbench.errors import ConfigError


def rec(gamma, budget, **metrics):
    return Record("runs", {"attack": "jbda", "label_mode": "soft", "defense": "deceptive", "gamma": gamma,
                           "budget": budget}, metrics, f"g{gamma}@{budget}")


def claim(*checks, combine="all"):
    return parse_claims([{"id": "c", "text": "t", "paper": "p", "checks": list(checks), "combine": combine}])


def verdict(claims, records):
    return evaluate(claims, records)[0]


def test_parse_errors_name_the_claim_and_key():
    with pytest.raises(ConfigError, match="compare 'bigger'"):
        claim({"metric": "acc_drop", "compare": "bigger", "threshold": 0.2})
    with pytest.raises(ConfigError, match="unknown keys \\['treshold'\\]"):
        claim({"metric": "acc_drop", "compare": ">=", "treshold": 0.2})
    with pytest.raises(ConfigError, match="needs `target:`"):
        claim({"metric": "acc_drop", "compare": "near", "threshold": 0.3})
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        claim({"metric": "acc_drop", "compare": ">="})
    with pytest.raises(ConfigError, match="appears twice"):
        parse_claims([{"id": "a", "checks": [{"metric": "acc_drop", "compare": ">=", "threshold": 1}]}] * 2)


def test_any_takes_the_best_all_the_worst():
    records = [rec(0.1, 100, acc_drop=Value(0.05)), rec(0.5, 100, acc_drop=Value(0.30))]
    best = verdict(claim({"metric": "acc_drop", "compare": ">=", "threshold": 0.2}), records)
    assert best.verdict == "reproduced" and best.checks[0].deciding.fields["gamma"] == 0.5
    worst = verdict(claim({"metric": "acc_drop", "compare": ">=", "threshold": 0.2, "over": "all"}), records)
    assert worst.verdict == "partly" and worst.checks[0].deciding.fields["gamma"] == 0.1  # 1 of 2 meets it
    none = verdict(claim({"metric": "acc_drop", "compare": ">=", "threshold": 0.5, "partly": 0.25}), records)
    assert none.verdict == "partly" and none.checks[0].status == "partly"
    assert verdict(claim({"metric": "acc_drop", "compare": ">=", "threshold": 0.5}), records).verdict == \
        "not reproduced"


def test_select_by_value_list_and_comparison():
    records = [rec(0.1, 100, surrogate_acc=Value(1.0)), rec(0.5, 400, surrogate_acc=Value(9.0))]
    check = {"metric": "surrogate_acc", "compare": ">=", "threshold": 5}
    res = verdict(claim({**check, "select": {"budget": {"<=": 200}}}), records)
    assert res.verdict == "not reproduced" and res.checks[0].selected == 1
    res = verdict(claim({**check, "select": {"gamma": [0.2, 0.5]}}), records)
    assert res.verdict == "reproduced"


def test_a_check_that_selects_nothing_is_not_checked_and_says_which_field_matched_nothing():
    records = [rec(0.1, 100, surrogate_acc=Value(1.0)), rec(0.5, 400, surrogate_acc=Value(9.0))]
    check = {"metric": "surrogate_acc", "compare": ">=", "threshold": 5}
    res = verdict(claim({**check, "select": {"attack": "random"}}), records)
    # no data is no verdict either way: a partial grid must not read as a failed reproduction
    assert res.verdict == "not checked" and res.checks[0].status == "no data"
    assert "no runs record with attack random; values measured: jbda" in res.checks[0].describe()
    res = verdict(claim({**check, "select": {"gama": 0.1}}), records)
    assert "no runs record has a field 'gama'; fields: attack, budget, defense, gamma" in res.checks[0].describe()
    res = verdict(claim({**check, "select": {"gamma": 0.2}}), [])
    assert "no runs records measured yet" in res.checks[0].describe()
    # one check with data decides: a fail beside a no-data check is still "not reproduced"
    both = claim({**check, "select": {"budget": 100}}, {**check, "select": {"attack": "random"}})
    assert verdict(both, records).verdict == "not reproduced"


def test_a_misspelt_metric_is_refused_when_the_claims_are_read():
    with pytest.raises(ConfigError, match="runs records have no metric 'acc_dorp'. Did you mean 'acc_drop'"):
        claim({"metric": "acc_dorp", "compare": ">=", "threshold": 0.2})
    with pytest.raises(ConfigError, match="utility records have no metric 'acc_drop'"):
        claim({"source": "utility", "metric": "acc_drop", "compare": ">=", "threshold": 0.2})


def test_lower_bound_below_threshold_is_inconclusive_not_failed():
    records = [rec(0.2, 100, query_multiplier=Value(8.0, None, 3, ">", "×"))]
    res = verdict(claim({"metric": "query_multiplier", "compare": ">=", "threshold": 64}), records)
    assert res.checks[0].status == "inconclusive" and res.verdict == "partly"
    assert "> 8.00×" in res.why
    records = [rec(0.2, 100, query_multiplier=Value(80.0, None, 3, ">", "×"))]
    assert verdict(claim({"metric": "query_multiplier", "compare": ">=", "threshold": 64}), records).verdict == \
        "reproduced"


def test_within_noise_uses_the_paired_standard_error():
    quiet = [rec(0.2, 100, acc_drop=Value(0.03, 0.01, 3))]  # 2 s.e. = 0.0115: 0.03 is a real change
    noisy = [rec(0.2, 100, acc_drop=Value(0.03, 0.05, 3))]  # 2 s.e. = 0.058: within noise
    check = {"metric": "acc_drop", "compare": "within_noise", "threshold": 0.01}
    assert verdict(claim(check), quiet).verdict == "not reproduced"
    assert verdict(claim(check), noisy).verdict == "reproduced"


def test_near_and_combine_any():
    records = [Record("utility", {"beta": 1, "gamma": g}, {"kl_nats": Value(k), "kl_nats_rev": Value(30.0)}, f"g{g}")
               for g, k in ((0.1, 1.2), (0.5, 3.1))]
    checks = ({"source": "utility", "metric": "kl_nats", "compare": "near", "target": 3.27, "threshold": 0.33},
              {"source": "utility", "metric": "kl_nats_rev", "compare": "near", "target": 3.27, "threshold": 0.33})
    res = verdict(claim(*checks), records)
    assert res.verdict == "partly" and res.checks[0].deciding.fields["gamma"] == 0.5
    assert verdict(claim(*checks, combine="any"), records).verdict == "reproduced"
