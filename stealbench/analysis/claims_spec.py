"""The claims side of a grid file: `paper:`, `utility:` and `claims:`, and where such a file is found.

Any grid file may carry these sections next to its runs. `stealbench grid FILE` runs the runs; `stealbench
leaderboard DIR --claims FILE` checks the claims against the finished runs; `stealbench reproduce` does both and
writes REPORT.md. A reproduction is such a file registered under a name (the `register_reproductions` hook), so
`--claims lee2018` and `reproduce lee2018` find the same file.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .claims import Claim, parse_claims
from ..errors import ConfigError

SECTIONS = ("paper", "utility", "claims", "fixed")


@dataclass
class SweepSpec:
    """`utility:`: a defense swept over its parameters on each run's victim (stealbench.utility_sweep)."""

    defense: str  # registry key
    params: dict[str, list[Any]]  # parameter -> values; every combination is one setting

    def settings(self) -> list[dict[str, Any]]:
        keys = list(self.params)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.params[k] for k in keys))]


@dataclass
class ClaimsSpec:
    paper: dict[str, Any]  # title, authors, reference, scale (shown in reports)
    utility: SweepSpec | None
    claims: list[Claim]
    source: Path | None = None
    fixed: dict[str, str] | None = None  # when the claims were fixed: {date, commit}, before the runs


def parse_fixed(raw: Any, where: str = "`fixed:`") -> dict[str, str]:
    """`fixed: {date: 2026-12-03, commit: 58109f7}`: when the claims were fixed, printed in the report; an optional
    `amended:` says what was added later, when, and what had been seen by then (printed as written)."""
    if not isinstance(raw, dict) or not {"date", "commit"} <= set(raw) <= {"date", "commit", "amended"}:
        raise ConfigError(f"{where} must be {{date: YYYY-MM-DD, commit: HASH}} (and optionally amended: TEXT): when "
                          "the claims were fixed, before the runs")
    fixed = {"date": str(raw["date"]), "commit": str(raw["commit"])}
    if raw.get("amended"):
        fixed["amended"] = " ".join(str(raw["amended"]).split())
    return fixed


def parse_sweep(raw: Any) -> SweepSpec | None:
    """The `utility:` section: {defense: KEY, params: {beta: [...], gamma: [...]}}."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("defense"), str):
        raise ConfigError("`utility:` must be a mapping with `defense:` (a registry key) and `params:`")
    params = raw.get("params") or {}
    if not isinstance(params, dict) or not params or not all(isinstance(v, list) and v for v in params.values()):
        raise ConfigError("`utility: params:` must map each defense parameter to a non-empty list of values")
    unknown = sorted(set(raw) - {"defense", "params"})
    if unknown:
        raise ConfigError(f"`utility:` has unknown keys {unknown}; allowed: defense, params")
    return SweepSpec(raw["defense"], {str(k): list(v) for k, v in params.items()})


def pop_claims_spec(spec: dict[str, Any], source: Path | None = None) -> ClaimsSpec | None:
    """Remove the claims sections from a parsed grid file; None when it has none of them."""
    raw = {key: spec.pop(key) for key in SECTIONS if key in spec}
    if not raw:
        return None
    paper = raw.get("paper") or {}
    if not isinstance(paper, dict):
        raise ConfigError("`paper:` must be a mapping (title, authors, reference)")
    claims, fixed = raw.get("claims"), raw.get("fixed")
    if isinstance(claims, str):  # `claims: other.yaml`: that file's claims (a quick version shares the full one's)
        other = Path(claims) if source is None else source.parent / claims
        shared = read_yaml_mapping(other, f"claims file (`claims: {claims}`)")
        claims = shared.get("claims")
        if not isinstance(claims, list):
            raise ConfigError(f"`claims: {raw['claims']}` names a file without a `claims:` list ({other})")
        fixed = shared.get("fixed") if fixed is None else fixed
    parsed = parse_claims(claims)
    if parsed and fixed is None:
        raise ConfigError("a file with `claims:` needs `fixed: {date: YYYY-MM-DD, commit: HASH}` (when the claims "
                          "were fixed, before the runs they are judged on)")
    return ClaimsSpec(paper, parse_sweep(raw.get("utility")), parsed, source,
                      None if fixed is None else parse_fixed(fixed))


# ------------------------------------------------------------------------------------------------ finding files

def is_yaml_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml"))


def reproduction_file(name: str, quick: bool = False) -> Path:
    """A registered reproduction's file (`<stem>_quick.yaml` beside it with quick), or a YAML path as given."""
    if is_yaml_path(name):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"reproduction file {name!r} does not exist")
        return path
    from ..plugins import get_catalog

    registry = get_catalog().reproductions
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"no reproduction {name!r}.{hint} Known: {', '.join(registry) or 'none'} "
                          "(`stealbench list reproductions`), or pass a reproduction YAML file")
    entry = registry.entry(name)
    path = Path(entry.obj)
    if quick:
        path = path.with_name(f"{path.stem}_quick{path.suffix}")
    if not path.is_file():
        what = "has no quick version: missing" if quick else "points at a missing file"
        raise ConfigError(f"reproduction {name!r} (plugin {entry.source}) {what} {path}")
    return path


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A grid, reproduction or claims file, read within safe_yaml's limits (size, aliases, repeated keys)."""
    from ..safe_yaml import read_mapping

    return read_mapping(path, what)


def load_claims_spec(name: str) -> ClaimsSpec:
    """`--claims NAME`: a registered reproduction or a grid YAML file, which must hold a `claims:` section."""
    path = reproduction_file(name)
    found = pop_claims_spec(read_yaml_mapping(path, "claims file"), path)
    if found is None or not found.claims:
        raise ConfigError(f"{str(path)!r} has no `claims:` section to check (see stealbench/analysis/claims.py for the form)")
    return found


__all__ = ["ClaimsSpec", "SECTIONS", "SweepSpec", "load_claims_spec", "parse_sweep", "pop_claims_spec",
           "read_yaml_mapping", "reproduction_file"]
