"""Claims of a paper, declared in YAML, checked against measured records.

A grid file (any grid; a reproduction is one registered under a name, e.g. stealbench/reproductions/) carries a
``claims:`` list next to its runs. Each claim is one row of the report: what the paper says, what was measured, a
verdict. A claim holds one or more *checks*; a check selects
records, reads one metric of each and compares it with a threshold::

    claims:
      - id: stolen-accuracy-drops
        text: The stolen model's accuracy drops by at least 20%       # the paper's words
        paper: ">= 20% lower"                                         # the paper's figure, as shown in the report
        checks:
          - source: runs                  # runs (paired grid runs, per checkpoint) or utility (victim sweep)
            select: {attack: jbda, label_mode: soft, defense_key: deceptive, gamma: [0.1, 0.2, 0.5]}
            metric: acc_drop_relative     # a key of Record.metrics
            compare: ">="                 # >=, <=, abs<=, near (|value - target| <= threshold), within_noise
            threshold: 0.2
            partly: 0.1                   # optional: the looser threshold that still earns "partly"
            over: any                     # any (the best record decides) or all (the worst decides)

``claims: other.yaml`` (a path relative to the file) takes another file's claims, e.g. a quick version sharing
the full one's. A claim may set ``combine: any`` (one passing check reproduces it, e.g. either KL direction when the paper does
not say which). `select` values are a scalar (equal), a list (one of) or a mapping of comparisons ({"<=": 1}).
A check passes, passes partly, fails, or is inconclusive (a lower bound below the threshold: the query
multiplier's "> x"); the claim is *reproduced* when every check passes, *not reproduced* when every check fails,
*not checked* when no check found data (a partial grid), *partly* otherwise.

This module holds the claim model and its parsing; stealbench.analysis.verdicts compares numbers, and records
are built elsewhere (stealbench.analysis.records), so plugins and other
papers' reproductions reuse it with their own YAML.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

COMPARES = (">=", "<=", "abs<=", "near", "within_noise")
#: what each source measures (stealbench.analysis.records builds them; tests/test_claims.py keeps the lists true)
METRICS = {
    "runs": ("surrogate_acc", "baseline_acc", "acc_drop", "acc_drop_relative", "error_multiplier",
             "query_multiplier", "hard_advantage", "victim_acc", "victim_acc_defended", "victim_acc_change",
             "top1_changed", "kl_nats", "kl_nats_rev", "oracle_kl_nats", "oracle_kl_nats_rev"),
    "utility": ("acc", "acc_defended", "acc_change", "top1_changed", "top1_changed_confident",
                "confident_fraction", "kl_nats", "kl_nats_rev", "l1"),
}
#: the fields every record of a source has; a defense's parameters (beta, gamma, ...) come on top
FIELDS = {
    "runs": ("data", "attack", "attack_label", "label_mode", "setting", "defense", "defense_label", "budget",
             "seeds"),
    "utility": ("data", "defense", "seeds"),
}
SOURCES = tuple(METRICS)
CHECK_KEYS = {"source", "select", "metric", "compare", "threshold", "target", "partly", "over", "label"}
CLAIM_KEYS = {"id", "text", "paper", "checks", "note", "combine"}
VERDICTS = ("reproduced", "partly", "not reproduced", "not checked")


@dataclass
class Value:
    """A measured value: mean over seeds, its sample std, how many seeds, and whether it is a bound."""

    mean: float
    std: float | None = None
    n: int = 1
    bound: str = "="  # "=", ">" / ">=" (lower bound), "<=" (upper bound)
    unit: str = ""  # "×" for multipliers

    def fmt(self, digits: int | None = None) -> str:
        digits = (2 if self.unit else 3) if digits is None else digits
        prefix = {"=": "", ">": "> ", ">=": "≥ ", "<=": "≤ "}.get(self.bound, self.bound + " ")
        mean = self.mean if abs(self.mean) >= 0.5 * 10 ** -digits else 0.0  # no "-0.000" from rounding noise
        text = f"{prefix}{mean:.{digits}f}{self.unit}"
        if self.std is not None and self.bound == "=":
            text += f" ± {self.std:.{digits}f}"
        return text


@dataclass
class Record:
    """One measured setting: identity fields (attack, defense, beta, gamma, budget, ...) and metrics."""

    source: str
    fields: dict[str, Any]
    metrics: dict[str, Value]
    label: str  # how the report names the setting
    context: str = ""  # short, shown in the claims table: e.g. "none 0.736 → 0.238" for an accuracy drop
    details: str = ""  # longer, shown in the per-claim details only

    def get(self, key: str) -> Any:
        return self.fields.get(key)


@dataclass
class Check:
    source: str
    select: dict[str, Any]
    metric: str
    compare: str
    threshold: float
    partly: float | None = None
    over: str = "any"
    target: float | None = None
    label: str = ""


@dataclass
class Claim:
    id: str
    text: str
    paper: str
    checks: list[Check]
    note: str = ""
    combine: str = "all"  # all: every check must pass; any: one passing check reproduces the claim


@dataclass
class CheckResult:
    check: Check
    status: str  # pass, partly, fail, inconclusive, no data
    deciding: Record | None
    value: Value | None
    passed: int = 0
    selected: int = 0
    records: list[Record] = field(default_factory=list)
    reason: str = ""  # with no data: which part of the selection matched nothing

    def describe(self) -> str:
        c = self.check
        if self.deciding is None or self.value is None:
            return f"{c.label or c.metric}: no measured setting matches {c.select}" + (
                f" ({self.reason})" if self.reason else "")
        what = c.label or c.metric
        context = f"; {self.deciding.context}" if self.deciding.context else ""
        return f"{what} {self.value.fmt()} ({self.deciding.label}{context})"


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    why: str
    checks: list[CheckResult]


# ----------------------------------------------------------------------------------------------------- parsing

def parse_claims(raw: Any) -> list[Claim]:
    """The `claims:` section of a grid file -> claims; ConfigError naming the claim and key on bad input."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("`claims:` must be a list of claims (each with id, text and checks)")
    claims, ids = [], set()
    for i, item in enumerate(raw):
        where = f"claims[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with id, text and checks")
        unknown = sorted(set(item) - CLAIM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(CLAIM_KEYS))}")
        cid = item.get("id")
        if not isinstance(cid, str) or not cid:
            raise ConfigError(f"{where} needs an `id:` (a short name)")
        if cid in ids:
            raise ConfigError(f"claim id {cid!r} appears twice")
        ids.add(cid)
        checks = item.get("checks")
        if not isinstance(checks, list) or not checks:
            raise ConfigError(f"claim {cid!r} needs a non-empty `checks:` list")
        combine = item.get("combine", "all")
        if combine not in ("all", "any"):
            raise ConfigError(f"claim {cid!r}: combine {combine!r} must be all or any")
        claims.append(Claim(cid, str(item.get("text", "")), str(item.get("paper", "")),
                            [_parse_check(c, f"claim {cid!r} check {j}") for j, c in enumerate(checks)],
                            str(item.get("note", "")), combine))
    return claims


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _parse_check(raw: Any, where: str) -> Check:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (source, select, metric, compare, threshold)")
    unknown = sorted(set(raw) - CHECK_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(CHECK_KEYS))}")
    source = raw.get("source", "runs")
    if source not in SOURCES:
        raise ConfigError(f"{where}: source {source!r} is not one of {', '.join(SOURCES)}")
    compare = raw.get("compare")
    if compare not in COMPARES:
        raise ConfigError(f"{where}: compare {compare!r} is not one of {', '.join(COMPARES)}")
    if not isinstance(raw.get("metric"), str):
        raise ConfigError(f"{where} needs `metric:` (a metric name)")
    if raw["metric"] not in METRICS[source]:  # a misspelt metric would select nothing and read "no data"
        close = difflib.get_close_matches(raw["metric"], METRICS[source], n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"{where}: {source} records have no metric {raw['metric']!r}.{hint} "
                          f"Known: {', '.join(METRICS[source])}")
    select = raw.get("select") or {}
    if not isinstance(select, dict):
        raise ConfigError(f"{where}: `select:` must be a mapping of field -> value, list or comparison")
    over = raw.get("over", "any")
    if over not in ("any", "all"):
        raise ConfigError(f"{where}: over {over!r} must be any or all")
    target = raw.get("target")
    if compare == "near" and target is None:
        raise ConfigError(f"{where}: compare near needs `target:` (and `threshold:` as the tolerance)")
    return Check(source, select, raw["metric"], compare, _number(raw.get("threshold"), f"{where} threshold"),
                 None if raw.get("partly") is None else _number(raw["partly"], f"{where} partly"), over,
                 None if target is None else _number(target, f"{where} target"), str(raw.get("label", "")))


__all__ = ["CHECK_KEYS", "CLAIM_KEYS", "COMPARES", "FIELDS", "METRICS", "SOURCES", "VERDICTS", "Check", "CheckResult",
           "Claim", "ClaimResult", "Record", "Value", "parse_claims"]
