"""Claims of a paper, declared in YAML before the runs, and the measured values they are judged on.

A grid file (a reproduction is one registered under a name, e.g. stealbench/reproductions/) carries a ``claims:``
list next to its runs, and ``fixed:`` saying when the claims were fixed (before any run they are judged on)::

    fixed: {date: 2026-12-03, commit: 58109f7}
    claims:
      - id: stolen-accuracy-drops
        text: The stolen model's accuracy drops by at least 20%       # the paper's words
        paper: ">= 20% lower"                                         # the paper's figure, as shown in the report
        parts:                                                        # one or more; "partly" needs two or more
          - label: JBDA relative drop
            source: runs                  # runs (paired grid runs, per checkpoint) or utility (victim sweep)
            primary: {attack: jbda, label_mode: soft, defense: deceptive, beta: 1.0, gamma: 0.2}  # alone decides
            secondary: {attack: jbda, label_mode: soft, defense: deceptive}   # optional: reported, never decides
            metric: acc_drop_relative     # a key of Record.metrics
            at_least: 0.2                 # exactly one of at_least: X, at_most: X, equivalent: {to: X, margin: m}
            budgets: every                # runs: every (holds at every budget), max ("up to"), or pin `budget:`
            best_response: {label_mode: invert-beta1.0-gamma0.2}  # optional: the attacker's best response

`best_response:` names the fields that turn the primary setting into the attacker's best response to the defense
(an adaptive label mode, issue 17): the part is judged there too, by the same test, and the report shows that
verdict beside the non-adaptive one. A claim about what an attacker can or cannot do should name one.

The primary selection must name one setting: its records may differ only in budget (a primary that names no
`pool` selects the victim's own pool: out-of-distribution pools a grid adds are secondary unless named). `select`-style values in
primary/secondary are a scalar (equal), a list (one of) or a mapping of comparisons ({"<=": 1}).
``claims: other.yaml`` (a path relative to the file) takes another file's claims and `fixed:`.

This module holds the model and its parsing; stealbench.analysis.verdicts judges, stealbench.analysis.records
builds the records.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError
from . import stats

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
             "seeds", "pool", "baseline_label_mode"),
    "utility": ("data", "defense", "seeds"),
}
SOURCES = tuple(METRICS)
#: multipliers: geometric means over seeds, per-seed brackets, a design ceiling
RATIO_METRICS = ("query_multiplier", "error_multiplier")
TESTS = ("at_least", "at_most", "equivalent")
QUANTIFIERS = ("every", "max")
PART_KEYS = {"label", "source", "primary", "secondary", "metric", "budgets", "best_response", *TESTS}
CLAIM_KEYS = {"id", "text", "paper", "parts", "note"}
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "not testable", "not checked")


@dataclass
class Value:
    """A measured figure, one value per seed. Multipliers carry a bracket per seed: the value lies in
    [values[i], highs[i]] (equal when exact; highs ∞ when only a lower bound is known, values 0 when only an upper
    bound is); `ceiling` is the largest value the design can measure (a multiplier's last checkpoint ÷ budget, the
    error multiplier's 1/(1 − undefended accuracy))."""

    values: list[float]
    highs: list[float] | None = None
    unit: str = ""
    ceiling: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def ratio(self) -> bool:
        return self.highs is not None

    @property
    def mean(self) -> float:
        """The estimate: seed mean, or for multipliers the geometric mean of the known ends."""
        if not self.ratio:
            return stats.mean(self.values)
        if self.bound in ("=", ">", ">=", "[]"):
            return stats.geometric_mean(self.values)
        if self.bound == "<=":
            return stats.geometric_mean(self.highs)
        return math.nan

    @property
    def std(self) -> float | None:
        return None if self.ratio else stats.sd(self.values)

    @property
    def bound(self) -> str:
        """'=' exact, '[]' bracketed, '>' only lower bounds, '>=' exact or lower bounds, '<=' upper bounds,
        'none' lower and upper bounds mixed (no bound on the mean at all)."""
        if not self.ratio:
            return "="
        low = all(v > 0 for v in self.values)
        high = all(math.isfinite(h) for h in self.highs)
        if low and high:
            return "=" if self.values == self.highs else "[]"
        if low:
            return ">" if all(math.isinf(h) for h in self.highs) else ">="
        return "<=" if high else "none"

    def interval(self) -> stats.Interval:
        if self.ratio:
            return stats.log_t_interval(self.values, self.highs)
        return stats.t_interval(self.values)

    def fmt(self, digits: int | None = None) -> str:
        digits = (2 if self.unit else 3) if digits is None else digits
        b = self.bound
        if b == "none":
            return "no bound (per-seed lower and upper bounds mixed)"
        if b == "[]":
            lo, hi = stats.geometric_mean(self.values), stats.geometric_mean(self.highs)
            return f"in [{lo:.{digits}f}, {hi:.{digits}f}]{self.unit} (crossing between checkpoints)"
        mean = self.mean if abs(self.mean) >= 0.5 * 10 ** -digits else 0.0  # no "-0.000" from rounding noise
        prefix = {"=": "", ">": "> ", ">=": "≥ ", "<=": "≤ "}[b]
        text = f"{prefix}{mean:.{digits}f}{self.unit}"
        if self.std is not None:
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
class Part:
    source: str
    primary: dict[str, Any]
    metric: str
    test: str  # at_least, at_most, equivalent
    value: float  # the claimed value (equivalent: the centre)
    margin: float | None = None  # equivalent only: fixed in the file, never widened by noise
    budgets: str = "every"
    secondary: dict[str, Any] | None = None
    label: str = ""
    #: fields that turn `primary` into the attacker's best response (judged beside it, by the same test)
    best_response: dict[str, Any] | None = None

    def against_best_response(self) -> "Part | None":
        """This part at the best response's setting (no secondary settings), or None without one."""
        if self.best_response is None:
            return None
        return replace(self, primary={**self.primary, **self.best_response}, secondary=None, best_response=None)

    def goal(self) -> str:
        if self.test == "equivalent":
            return f"within ±{self.margin:g} of {self.value:g} (TOST)"
        return f"{'≥' if self.test == 'at_least' else '≤'} {self.value:g}"


@dataclass
class Claim:
    id: str
    text: str
    paper: str
    parts: list[Part]
    note: str = ""


@dataclass
class BudgetResult:
    """One record of the primary setting judged: estimate, 95% interval, p (raw and Holm-adjusted), verdict."""

    record: Record
    value: Value
    interval: stats.Interval
    p_holds: float = 1.0  # small: the claim holds at this record
    p_fails: float = 1.0  # small: the claim fails at this record
    verdict: str = "inconclusive"
    why: str = ""


@dataclass
class PartResult:
    part: Part
    verdict: str
    why: str
    budgets: list[BudgetResult] = field(default_factory=list)
    deciding: BudgetResult | None = None
    secondary: list[BudgetResult] = field(default_factory=list)


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    why: str
    parts: list[PartResult]
    #: the parts that name a best response, judged there (same order); the claim's verdict against it
    best_response: list[PartResult] = field(default_factory=list)
    best_response_verdict: str | None = None
    best_response_why: str = ""


# ----------------------------------------------------------------------------------------------------- parsing

def parse_claims(raw: Any) -> list[Claim]:
    """The `claims:` section of a grid file -> claims; ConfigError naming the claim and key on bad input."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("`claims:` must be a list of claims (each with id, text and parts)")
    claims, ids = [], set()
    for i, item in enumerate(raw):
        where = f"claims[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with id, text and parts")
        if "checks" in item:
            raise ConfigError(f"{where}: `checks:` is the old form; write `parts:` with one `primary:` setting each "
                              "(see stealbench/analysis/claims.py)")
        unknown = sorted(set(item) - CLAIM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(CLAIM_KEYS))}")
        cid = item.get("id")
        if not isinstance(cid, str) or not cid:
            raise ConfigError(f"{where} needs an `id:` (a short name)")
        if cid in ids:
            raise ConfigError(f"claim id {cid!r} appears twice")
        ids.add(cid)
        parts = item.get("parts")
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"claim {cid!r} needs a non-empty `parts:` list")
        claims.append(Claim(cid, str(item.get("text", "")), str(item.get("paper", "")),
                            [_parse_part(p, f"claim {cid!r} part {j}") for j, p in enumerate(parts)],
                            str(item.get("note", ""))))
    return claims


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _selection(raw: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: `{key}:` must be a non-empty mapping of field -> value (the setting)")
    return dict(raw)


def _parse_part(raw: Any, where: str) -> Part:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (source, primary, metric and one of {', '.join(TESTS)})")
    for old in ("select", "compare", "threshold", "over", "partly", "combine", "target"):
        if old in raw:
            raise ConfigError(f"{where}: `{old}:` is no longer supported (a best-of-settings or noise-widened rule); "
                              f"name one `primary:` setting and one of {', '.join(TESTS)}")
    unknown = sorted(set(raw) - PART_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(PART_KEYS))}")
    source = raw.get("source", "runs")
    if source not in SOURCES:
        raise ConfigError(f"{where}: source {source!r} is not one of {', '.join(SOURCES)}")
    if not isinstance(raw.get("metric"), str):
        raise ConfigError(f"{where} needs `metric:` (a metric name)")
    if raw["metric"] not in METRICS[source]:  # a misspelt metric would select nothing and read "not checked"
        close = difflib.get_close_matches(raw["metric"], METRICS[source], n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"{where}: {source} records have no metric {raw['metric']!r}.{hint} "
                          f"Known: {', '.join(METRICS[source])}")
    if "primary" not in raw:
        raise ConfigError(f"{where} needs `primary:`, the one setting that decides the claim (the paper's)")
    primary = _selection(raw["primary"], where, "primary")
    secondary = None if raw.get("secondary") is None else _selection(raw["secondary"], where, "secondary")
    tests = [t for t in TESTS if t in raw]
    if len(tests) != 1:
        raise ConfigError(f"{where} needs exactly one of {', '.join(TESTS)}, got {tests or 'none'}")
    test = tests[0]
    margin = None
    if test == "equivalent":
        eq = raw["equivalent"]
        if not isinstance(eq, dict) or set(eq) != {"to", "margin"}:
            raise ConfigError(f"{where}: `equivalent:` must be {{to: VALUE, margin: M}} (the margin is fixed here, "
                              "before the runs)")
        value = _number(eq["to"], f"{where} equivalent.to")
        margin = _number(eq["margin"], f"{where} equivalent.margin")
        if margin <= 0:
            raise ConfigError(f"{where}: equivalent.margin must be > 0, got {margin:g}")
    else:
        value = _number(raw[test], f"{where} {test}")
    if test == "equivalent" and raw["metric"] in RATIO_METRICS:
        raise ConfigError(f"{where}: {raw['metric']} is a multiplier; claim at_least or at_most, not equivalent")
    budgets = raw.get("budgets", "every")
    if budgets not in QUANTIFIERS:
        raise ConfigError(f"{where}: budgets {budgets!r} must be every (holds at every budget) or max (\"up to\")")
    if source == "utility" and "budgets" in raw:
        raise ConfigError(f"{where}: utility records have no budgets; drop `budgets:`")
    best = raw.get("best_response")
    if best is not None:
        best = _selection(best, where, "best_response")
        if source != "runs":
            raise ConfigError(f"{where}: `best_response:` needs runs records (an attacker's setting); utility "
                              "records have no attacker")
    return Part(source, primary, raw["metric"], test, value, margin, budgets, secondary, str(raw.get("label", "")),
                best)


__all__ = ["CLAIM_KEYS", "FIELDS", "METRICS", "PART_KEYS", "QUANTIFIERS", "SOURCES", "TESTS", "VERDICTS",
           "BudgetResult", "Claim", "ClaimResult", "Part", "PartResult", "Record", "Value", "parse_claims"]
