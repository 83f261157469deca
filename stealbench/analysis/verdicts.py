"""Verdicts: each claim judged at its one primary setting by inference over seeds (stealbench.analysis.stats).

Per record of the primary setting (one per budget): the 95% t interval and two one-sided tests, "the claim holds"
and "the claim fails" (TOST for equivalence, whose margin comes from the file and never widens with noise). Where
a part spans several budgets the p-values are Holm-adjusted over them. A record *reproduces* when the holding test
rejects (its interval lies inside what the claim asserts), *fails* when the failing test rejects (outside), and is
*inconclusive* otherwise (it straddles). A claimed multiplier at or above what the design can measure (its
ceiling) is *not testable*. Over budgets: `every` needs every budget to reproduce and fails when one fails; `max`
("up to") reproduces when some budget does and fails when every budget fails. Over parts: all alike → that verdict;
some reproduced and some not → *partly*; a failure with nothing holding → not reproduced; otherwise inconclusive.
Secondary settings are judged the same way, record by record, and reported; they never decide. A part that names
a `best_response:` is judged again at that setting; those parts combine into the claim's verdict against the
attacker's best response, reported beside the non-adaptive verdict.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from . import stats
from .claims import BudgetResult, Claim, ClaimResult, Part, PartResult, Record, Value
from .labels import OWN_POOL

_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def matches(record: Record, select: dict[str, Any]) -> bool:
    for key, want in select.items():
        have = record.get(key)
        if isinstance(want, dict):
            if have is None or not all(_OPS[op](have, v) for op, v in want.items()):
                return False
        elif isinstance(want, list):
            if have not in want and str(have) not in map(str, want):
                return False
        elif have != want and str(have) != str(want):
            return False
    return True


def _selected(part: Part, records: list[Record], select: dict[str, Any]) -> list[Record]:
    return [r for r in records if r.source == part.source and matches(r, select) and part.metric in r.metrics]


def _setting_of(record: Record) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in record.fields.items() if k not in ("budget", "seeds")))


def _p_values(part: Part, v: Value) -> tuple[float, float]:
    """(p that the claim holds, p that it fails) for one record; small p: that side is shown."""
    x = part.value
    if v.ratio:  # multipliers: t tests on log values; a seed known only from one side leaves the other side open
        lows_known, highs_known = all(a > 0 for a in v.values), all(math.isfinite(h) for h in v.highs)
        logx = math.log(x) if x > 0 else -math.inf
        above = stats.p_greater([math.log(a) for a in v.values], logx) if lows_known else 1.0
        below = stats.p_less([math.log(h) for h in v.highs], logx) if highs_known else 1.0
        return (above, below) if part.test == "at_least" else (below, above)
    if len(set(v.values)) == 1:  # no spread: the interval is the point itself, inside or outside (bounds included)
        point = v.values[0]
        holds = {"at_least": point >= x, "at_most": point <= x}.get(part.test, abs(point - x) < (part.margin or 0))
        return (0.0, 1.0) if holds else (1.0, 0.0)
    if part.test == "at_least":
        return stats.p_greater(v.values, x), stats.p_less(v.values, x)
    if part.test == "at_most":
        return stats.p_less(v.values, x), stats.p_greater(v.values, x)
    m = part.margin
    return (stats.tost_p(v.values, x, m),
            min(stats.p_greater(v.values, x + m), stats.p_less(v.values, x - m)))


def _untestable(part: Part, v: Value) -> bool:
    """A claimed lower bound the design cannot measure: at or above its ceiling."""
    return part.test == "at_least" and v.ceiling is not None and part.value >= v.ceiling


def judge(part: Part, records: list[Record], adjust: bool = True) -> list[BudgetResult]:
    """Every record judged; with `adjust`, p-values Holm-adjusted over the records (the budgets of one setting)."""
    results = []
    for r in records:
        v = r.metrics[part.metric]
        res = BudgetResult(r, v, v.interval())
        if _untestable(part, v):
            res.verdict = "not testable"
            res.why = f"{part.value:g}{v.unit} is at or above the design's ceiling {v.ceiling:.3g}{v.unit}"
        elif v.n < 2:
            res.why = "one seed: no interval"
        else:
            res.p_holds, res.p_fails = _p_values(part, v)
        results.append(res)
    tested = [res for res in results if res.verdict != "not testable" and res.value.n >= 2]
    if adjust and len(tested) > 1:
        for res, ph, pf in zip(tested, stats.holm([t.p_holds for t in tested]),
                               stats.holm([t.p_fails for t in tested])):
            res.p_holds, res.p_fails = ph, pf
    for res in tested:
        if res.p_holds < stats.ALPHA:
            res.verdict = "reproduced"
        elif res.p_fails < stats.ALPHA:
            res.verdict = "not reproduced"
        if res.value.bound == "none":
            res.why = "per-seed lower and upper bounds mixed: no bound"
    return results


def _primary_records(part: Part, records: list[Record]) -> list[Record]:
    """The records of the primary selection. A primary that names no attacker pool means the victim's own pool,
    so a grid that adds out-of-distribution pools (secondary settings) leaves the deciding setting as it was."""
    chosen = _selected(part, records, part.primary)
    if "pool" in part.primary:
        return chosen
    return [r for r in chosen if r.get("pool") in (None, OWN_POOL)]


def evaluate_part(part: Part, records: list[Record], where: str = "") -> PartResult:
    chosen = _primary_records(part, records)
    if not chosen:
        return PartResult(part, "not checked", _why_none(part, records))
    settings = {_setting_of(r): r.label for r in chosen}
    if len(settings) > 1:
        raise ConfigError(f"{where or 'a claim part'}: primary {part.primary} selects {len(settings)} settings "
                          f"({'; '.join(sorted(settings.values())[:4])}); add fields until it names one")
    chosen.sort(key=lambda r: r.get("budget") or 0)
    budgets = judge(part, chosen)
    verdicts = [b.verdict for b in budgets]
    sign = -1 if part.test == "at_most" else 1
    if part.budgets == "max" and len(budgets) > 1:
        deciding = max(budgets, key=lambda b: sign * b.value.mean if math.isfinite(b.value.mean) else -math.inf)
        if "reproduced" in verdicts:
            verdict = "reproduced"
        elif all(v == "not reproduced" for v in verdicts):
            verdict = "not reproduced"
        elif all(v in ("not testable", "not reproduced") for v in verdicts):
            verdict = "not testable"
        else:
            verdict = "inconclusive"
    else:
        failing = [b for b in budgets if b.verdict == "not reproduced"]
        deciding = failing[0] if failing else min(budgets, key=lambda b: (b.verdict == "reproduced", b.p_holds))
        if failing:
            verdict = "not reproduced"
        elif all(v == "reproduced" for v in verdicts):
            verdict = "reproduced"
        elif all(v == "not testable" for v in verdicts):
            verdict = "not testable"
        else:
            verdict = "inconclusive"
    secondary = []
    if part.secondary is not None:
        primary_ids = {id(r) for r in chosen}
        secondary = judge(part, [r for r in _selected(part, records, part.secondary) if id(r) not in primary_ids],
                          adjust=False)
    return PartResult(part, verdict, _why(part, budgets, verdict), budgets, deciding, secondary)


def _why(part: Part, budgets: list[BudgetResult], verdict: str) -> str:
    n = len(budgets)
    counts = {v: sum(1 for b in budgets if b.verdict == v) for v in ("reproduced", "not reproduced",
                                                                      "inconclusive", "not testable")}
    what = f"{part.goal()}" + (f" at {'every' if part.budgets == 'every' else 'some'} budget" if n > 1 else "")
    text = f"{what}: " + ", ".join(f"{k} {c}/{n}" for k, c in counts.items() if c)
    notes = sorted({b.why for b in budgets if b.why})
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _why_none(part: Part, records: list[Record]) -> str:
    """Why a part selected nothing: the first primary field that no remaining record satisfies."""
    left = [r for r in records if r.source == part.source]
    if not left:
        return f"no {part.source} records measured yet"
    for key, want in part.primary.items():
        kept = [r for r in left if matches(r, {key: want})]
        if not kept:
            seen = sorted({str(r.get(key)) for r in left if key in r.fields})
            if not seen:
                fields = sorted({k for r in left for k in r.fields})
                return f"no {part.source} record has a field {key!r}; fields: {', '.join(fields)}"
            return f"no {part.source} record with {key} {want}; values measured: {', '.join(seen)}"
        left = kept
    return f"the selected {part.source} records do not measure {part.metric!r}"


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its parts' verdicts."""
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if "reproduced" in verdicts and "not reproduced" in verdicts:
        return "partly"
    if "not reproduced" in verdicts:
        return "not reproduced"
    return "inconclusive"


def evaluate(claims: list[Claim], records: list[Record]) -> list[ClaimResult]:
    results = []
    for claim in claims:
        parts = [evaluate_part(p, records, f"claim {claim.id!r} part {i}") for i, p in enumerate(claim.parts)]
        why = "; ".join(f"{p.part.label or p.part.metric}: {p.verdict} ({p.why})" if len(parts) > 1 else p.why
                        for p in parts)
        result = ClaimResult(claim, combine([p.verdict for p in parts]), why, parts)
        best = [(i, p.against_best_response()) for i, p in enumerate(claim.parts) if p.best_response is not None]
        if best:
            result.best_response = [evaluate_part(p, records, f"claim {claim.id!r} part {i} (best response)")
                                    for i, p in best]
            result.best_response_verdict = combine([p.verdict for p in result.best_response])
            result.best_response_why = "; ".join(f"{p.part.label or p.part.metric}: {p.verdict} ({p.why})"
                                                 for p in result.best_response)
        results.append(result)
    return results


__all__ = ["combine", "evaluate", "evaluate_part", "judge", "matches"]
