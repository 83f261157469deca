"""Verdicts: the checks of each claim evaluated against measured records (stealbench.analysis.claims)."""

from __future__ import annotations

import math
from typing import Any

from .claims import Check, CheckResult, Claim, ClaimResult, Record, Value


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


def _score(check: Check, value: Value) -> float:
    """How well a value does on a check; larger is better (used to pick the best or worst record)."""
    if check.compare == ">=":
        return value.mean
    if check.compare == "<=":
        return -value.mean
    if check.compare == "abs<=":
        return -abs(value.mean)
    if check.compare == "near":
        return -abs(value.mean - check.target)
    return -abs(value.mean) / _noise(value, check.threshold)  # within_noise


def _noise(value: Value, floor: float) -> float:
    """Seed noise of a paired difference: two standard errors of its mean, at least `floor`."""
    if value.std is None or value.n < 2:
        return max(floor, 1e-12)
    return max(floor, 2 * value.std / math.sqrt(value.n), 1e-12)


def status_of(check: Check, value: Value) -> str:
    def ok(limit: float) -> bool:
        if check.compare == ">=":
            return value.mean >= limit
        if check.compare == "<=":
            return value.mean <= limit
        if check.compare == "abs<=":
            return abs(value.mean) <= limit
        if check.compare == "near":
            return abs(value.mean - check.target) <= limit
        return abs(value.mean) <= _noise(value, limit)

    if ok(check.threshold):
        if value.bound == "<=" and check.compare == ">=":
            return "inconclusive"  # an upper bound above the threshold says nothing
        return "pass"
    if value.bound in (">", ">=") and check.compare == ">=":
        return "inconclusive"  # the target was not reached within the budget: the true value may be larger
    if check.partly is not None and ok(check.partly):
        return "partly"
    return "fail"


def evaluate_check(check: Check, records: list[Record]) -> CheckResult:
    chosen = [r for r in records if r.source == check.source and matches(r, check.select)
              and check.metric in r.metrics]
    if not chosen:
        return CheckResult(check, "no data", None, None, reason=_why_none(check, records))
    statuses = [(status_of(check, r.metrics[check.metric]), r) for r in chosen]
    passed = sum(1 for s, _ in statuses if s == "pass")
    key = (lambda r: _score(check, r.metrics[check.metric]))
    if check.over == "all":
        deciding = min(chosen, key=key)
        status = status_of(check, deciding.metrics[check.metric])
        if status == "fail" and passed:
            status = "partly"  # some settings meet it, the worst does not
    else:
        deciding = max(chosen, key=key)
        status = status_of(check, deciding.metrics[check.metric])
    return CheckResult(check, status, deciding, deciding.metrics[check.metric], passed, len(chosen), chosen)


def _why_none(check: Check, records: list[Record]) -> str:
    """Why a check selected nothing: the first selection field that no remaining record satisfies."""
    left = [r for r in records if r.source == check.source]
    if not left:
        return f"no {check.source} records measured yet"
    for key, want in check.select.items():
        kept = [r for r in left if matches(r, {key: want})]
        if not kept:
            seen = sorted({str(r.get(key)) for r in left if key in r.fields})
            if not seen:
                fields = sorted({k for r in left for k in r.fields})
                return f"no {check.source} record has a field {key!r}; fields: {', '.join(fields)}"
            return f"no {check.source} record with {key} {want}; values measured: {', '.join(seen)}"
        left = kept
    return f"the selected {check.source} records do not measure {check.metric!r}"


def evaluate(claims: list[Claim], records: list[Record]) -> list[ClaimResult]:
    results = []
    for claim in claims:
        checks = [evaluate_check(c, records) for c in claim.checks]
        statuses = [c.status for c in checks]
        passed = [s == "pass" for s in statuses]
        if all(s == "no data" for s in statuses):
            verdict = "not checked"  # nothing measured yet (a partial grid): no verdict either way
        elif all(passed) or (claim.combine == "any" and any(passed)):
            verdict = "reproduced"
        elif all(s in ("fail", "no data") for s in statuses):
            verdict = "not reproduced"
        else:
            verdict = "partly"
        results.append(ClaimResult(claim, verdict, _why(checks), checks))
    return results


def goal_text(check: Check) -> str:
    if check.compare == "near":
        return f"within {check.threshold:g} of {check.target:g}"
    if check.compare == "within_noise":
        return f"within seed noise (2 s.e., at least {check.threshold:g})"
    if check.compare == "abs<=":
        return f"|·| ≤ {check.threshold:g}"
    return f"{check.compare} {check.threshold:g}"


def _why(checks: list[CheckResult]) -> str:
    """One line: per check, how many selected settings meet its goal (the values are in the measured column)."""
    parts = []
    for c in checks:
        chk = c.check
        what = chk.label or chk.metric
        if c.status == "no data":
            parts.append(f"{what}: no data")
            continue
        text = f"{what}: {c.passed}/{c.selected} settings meet {goal_text(chk)}"
        if c.status == "inconclusive":
            text += f" (best is a lower bound, {c.value.fmt()})"
        elif c.status == "partly" and c.passed == 0:
            text += f" (within the looser {chk.partly:g})" if chk.partly is not None else ""
        parts.append(text)
    return "; ".join(parts)


__all__ = ["evaluate", "evaluate_check", "goal_text", "matches", "status_of"]
