"""Grids of runs: a YAML file -> a list of `stealbench fit` argument lists, run one after another.

A grid file (see configs/experiments/) names the dimensions; every combination is one run::

    name: my_grid                  # optional (default: the file name); runs go to runs/<name>
    output_dir: runs/my_grid       # optional
    common:                        # fit options for every run: nested or dotted keys
      victim: {epochs: 5}
      attack.epochs_per_round: 10  # dotted keys work too
    data: [{name: mnist, root: ../shared/data}]
    defenses: [{name: none}, {name: deceptive, beta: 1.0, gamma: 0.1}]
    attacks: [{name: jbda, rounds: 9}, {name: random, budgets: [500, 2000]}]  # `budgets` overrides per attack
    label_modes: [soft, hard, invert, {mode: average, k: 4}]   # default [soft]; options -> --label_options.*
    budgets: [400, 1600, 6400]
    pools: [own, {name: fashion-mnist, root: ../shared/data}]   # default [own]: the attacker's pool (--pool_data)
    seeds: [0, 1, 2]               # default [0]
    exclude: [{attack: random, label_mode: hard}]   # optional: skip combinations matching all given fields

An entry is a registry key or a mapping with `name`, an optional `label` and its init parameters
(`--defense.beta 1.0`). Its label (used in run names) is the name followed by its parameters, except `root` and
`download`, which say where data lives, not what is measured. Run names are deterministic,
`<data>_<defense>_<attack>_<label mode>_b<budget>_s<seed>`, so a grid re-run skips the runs already complete.

Pools are the attacker's data: `own` (the victim data set's own pool split) or another registered data set
(`--pool_data`, an out-of-distribution pool, see stealbench/pools.py); a run with another pool is named
`<data>-pool-<pool>_...` and its identity carries `pool`.

Label modes are any registered mode (`stealbench list label_modes`); a mapping names it with `mode:` and gives
its options, and its label is the key followed by its options sorted by name (`average-k4`), as the run's
identity spells it. A mode runs only in the cells whose defense it answers (its `answers` is "all" or names the
defense's key) and against `none`, the undefended baseline it is compared with; other cells are skipped
(`invert` runs against `deceptive` and `none`, not against `topk`).

This module only plans runs (and imports no Lightning); `stealbench.grid_runner` runs them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .analysis.labels import OWN_POOL  # the `pools:` entry that means the victim data set's own pool split
from .errors import ConfigError

#: top-level keys of a grid file
GRID_KEYS = ("name", "description", "output_dir", "common", "data", "defenses", "attacks", "label_modes", "budgets",
             "pools", "seeds", "exclude")
#: entry parameters that say where data lives, not what is measured: left out of labels
NON_IDENTITY_PARAMS = frozenset({"root", "download"})
_COMPONENTS = {"data": "datasets", "defenses": "defenses", "attacks": "attacks"}


@dataclass(frozen=True)
class Entry:
    """One value of a component dimension: a registry key and its init parameters."""

    name: str
    params: dict[str, Any]
    label: str
    budgets: tuple[int, ...] | None = None  # attacks only: overrides the grid's budgets


@dataclass(frozen=True)
class GridRun:
    index: int
    name: str
    args: list[str]
    identity: dict[str, Any]  # data, defense, attack (labels), label_mode, budget, seed
    weight: float  # relative cost estimate, for the time-left estimate

    def folder(self, output_dir: str | Path) -> Path:
        return Path(output_dir) / self.name


@dataclass
class Grid:
    name: str
    output_dir: str
    runs: list[GridRun]
    source: Path | None = None
    description: str = ""
    claims: Any = None  # stealbench.analysis.claims_spec.ClaimsSpec when the file carries `claims:` (checked by leaderboard)

    def by_name(self, name: str) -> GridRun:
        for run in self.runs:
            if run.name == name:
                return run
        import difflib

        close = difflib.get_close_matches(name, [r.name for r in self.runs], n=3)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigError(f"grid {self.name!r} has no run named {name!r}.{hint}")


# ----------------------------------------------------------------------------------------------------- expansion

def format_value(value: Any) -> str:
    """A YAML value as a command-line value jsonargparse reads back to the same thing."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def flatten_options(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{victim: {epochs: 5}, attack.lam: 0.1} -> {victim.epochs: 5, attack.lam: 0.1}. Lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full not in ("data", "defense", "attack"):
            flat.update(flatten_options(value, full + "."))
        else:
            flat[full] = value
    return flat


def _slug(value: Any) -> str:
    text = format_value(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+-]+", "", text.replace("/", "-"))


def parse_entry(raw: Any, dimension: str) -> Entry:
    if isinstance(raw, str):
        return Entry(raw, {}, raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{dimension}: each entry must be a registry key or a mapping with `name:`, got {raw!r}")
    params = {k: v for k, v in raw.items() if k not in ("name", "label", "budgets")}
    budgets = raw.get("budgets")
    if budgets is not None and dimension != "attacks":
        raise ConfigError(f"{dimension} entry {raw['name']!r}: `budgets` is allowed on attack entries only")
    label = raw.get("label")
    if label is None:
        parts = [raw["name"]] + [f"{k}{_slug(v)}" for k, v in params.items() if k not in NON_IDENTITY_PARAMS]
        label = "-".join(parts)
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", label):
        raise ConfigError(f"{dimension} entry {raw['name']!r}: label {label!r} must use only letters, digits, "
                          "'.', '+' and '-' (it becomes part of run folder names)")
    return Entry(raw["name"], params, label, _int_list(budgets, f"{raw['name']}.budgets") if budgets else None)


def _int_list(values: Any, what: str) -> tuple[int, ...]:
    if isinstance(values, (int, str)):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{what} must be a non-empty list of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{what} must hold integers, got {v!r}")
        out.append(v)
    return tuple(out)


def _entries(spec: dict, key: str, default: list | None = None) -> list[Entry]:
    raw = spec.get(key, default)
    if raw is None:
        raise ConfigError(f"grid file needs `{key}:` (a list)")
    if not isinstance(raw, list):
        raw = [raw]
    if not raw:
        raise ConfigError(f"grid `{key}:` is empty")
    entries = [parse_entry(r, key) for r in raw]
    labels = [e.label for e in entries]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ConfigError(f"grid `{key}:` has entries with the same label {dupes}; give them distinct `label:`s "
                          "or parameters")
    return entries


@dataclass(frozen=True)
class ModeEntry:
    """One value of the label-mode dimension: a registered mode, its options, its label and the defenses it is
    built against ("all", or their keys: the attacker's side's word, used only to pick the grid's cells)."""

    name: str
    params: dict[str, Any]
    label: str
    answered: str | tuple[str, ...] = "all"

    def answers(self, defense_key: str) -> bool:
        """Whether the mode is built against `defense_key`."""
        return self.answered == "all" or defense_key in self.answered


#: (plugin search path, key, options as JSON) -> the defenses the mode answers, as the attacker's side said
_DESCRIBED: dict[tuple[Any, ...], str | tuple[str, ...]] = {}


def _describe(items: list[tuple[Any, Any]]) -> list[str | tuple[str, ...]]:
    """For each (grid entry, LabelModeChoice): the defenses the mode answers ("all" or their keys). The modes are
    built, their options checked, on the attacker's side (one throwaway process for those not described before):
    the defender knows label modes by name only."""
    from .attacker.launch import ask_attacker
    from .errors import StealbenchError

    where = (tuple(sys.path), os.environ.get("STEALBENCH_PLUGINS"), os.environ.get("STEALBENCH_BLOCK_PLUGINS"))

    def cached(choice) -> tuple[Any, ...]:
        return (*where, choice.key, json.dumps(choice.options, sort_keys=True))

    todo = [(item, choice) for item, choice in items if cached(choice) not in _DESCRIBED]

    def ask(link) -> None:
        for item, choice in todo:
            try:
                answers = link.label_mode(choice, 2)["answers"]
            except StealbenchError as exc:
                raise ConfigError(f"grid `label_modes:` entry {item!r}: {exc}") from None
            _DESCRIBED[cached(choice)] = answers if answers == "all" else tuple(answers)

    if todo:
        ask_attacker("off", (), ask)
    return [_DESCRIBED[cached(choice)] for _, choice in items]


def _label_modes(raw: Any) -> list[ModeEntry]:
    """`label_modes:` -> entries; unknown modes and options are refused now, before any run starts."""
    from .attacker.label_choice import LabelModeChoice, mode_label
    from .errors import StealbenchError

    raw = [raw] if isinstance(raw, (str, dict)) else raw
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"grid `label_modes:` must be a list of label modes (keys, or mappings like "
                          f"{{mode: average, k: 4}}), got {raw!r}")
    items = []
    for item in raw:
        if isinstance(item, dict):
            key = item.get("mode", item.get("name"))
            params = {k: v for k, v in item.items() if k not in ("mode", "name", "label")}
        else:
            key, params = item, {}
        if not isinstance(key, str):
            raise ConfigError(f"grid `label_modes:` entry {item!r} needs `mode: KEY` (stealbench list label_modes)")
        try:
            items.append((item, LabelModeChoice.checked(key, params)))
        except StealbenchError as exc:
            raise ConfigError(f"grid `label_modes:` entry {item!r}: {exc}") from None
    entries = []
    for (item, choice), answered in zip(items, _describe(items)):  # key and options checked over there
        label = item.get("label") if isinstance(item, dict) and item.get("label") else mode_label(choice.key,
                                                                                                choice.options)
        entries.append(ModeEntry(choice.key, choice.options, str(label), answered))
    labels = [e.label for e in entries]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ConfigError(f"grid `label_modes:` lists {dupes} twice")
    return entries


def _weight(attack: Entry, budget: int) -> float:
    """Rough relative cost: a fixed part (victim from cache, evaluation) plus a part growing with the budget."""
    return 1.0 + budget / 500.0


def expand(spec: dict[str, Any], *, name: str, output_dir: str) -> list[GridRun]:
    """All runs of a grid, in a fixed order: data, seed, attack, label mode, budget, defense (innermost).

    Defenses innermost: the undefended run and the defended runs it is compared with finish close together, so a
    partly done grid already yields comparisons; seeds early, so seed 0 of everything comes first.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"a grid file must hold a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"unknown grid keys {unknown}; allowed: {', '.join(GRID_KEYS)}")
    data = _entries(spec, "data", ["digits"])
    defenses = _entries(spec, "defenses")
    attacks = _entries(spec, "attacks")
    label_modes = _label_modes(spec.get("label_modes", ["soft"]))
    pools = _entries(spec, "pools", [OWN_POOL])
    seeds = _int_list(spec.get("seeds", [0]), "grid `seeds:`")
    budgets = _int_list(spec["budgets"], "grid `budgets:`") if "budgets" in spec else None
    for attack in attacks:
        if attack.budgets is None and budgets is None:
            raise ConfigError(f"grid needs `budgets:` (or `budgets:` on attack {attack.label!r})")
    for b in [*(budgets or ()), *(b for a in attacks for b in (a.budgets or ()))]:
        if b < 1:
            raise ConfigError(f"budgets must be positive, got {b}")
    common = spec.get("common") or {}
    if not isinstance(common, dict):
        raise ConfigError("grid `common:` must be a mapping of fit options")
    common = flatten_options(common)
    reserved = {"data", "defense", "attack", "budget", "seed", "label_mode", "name", "output_dir",
                "pool_data"} & set(common)
    if reserved:
        raise ConfigError(f"grid `common:` must not set {sorted(reserved)}: they are grid dimensions")
    exclude = spec.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(x, dict) for x in exclude):
        raise ConfigError("grid `exclude:` must be a list of mappings, e.g. [{attack: random, label_mode: hard}]")

    def excluded(identity: dict[str, Any]) -> bool:
        for rule in exclude:
            bad = set(rule) - set(identity)
            if bad:
                raise ConfigError(f"grid `exclude:` rule {rule} uses unknown fields {sorted(bad)}; "
                                  f"use {', '.join(identity)}")
            if all(str(identity[k]) == str(v) or identity.get(f"{k}_key") == v for k, v in rule.items()):
                return True
        return False

    common_args = []
    if "config" in common:
        common_args += ["--config", format_value(common.pop("config"))]
    for key, value in common.items():
        common_args += [f"--{key}", format_value(value)]

    runs: list[GridRun] = []
    for d, pool in ((d, p) for d in data for p in pools):
        own = pool.name == OWN_POOL
        data_part = d.label if own else f"{d.label}-pool-{pool.label}"
        pool_args = [] if own else ["--pool_data", pool.name] + [
            arg for key, value in pool.params.items() for arg in (f"--pool_data.{key}", format_value(value))]
        for seed in seeds:
            for attack in attacks:
                for mode in label_modes:
                    label_mode = mode.label
                    for budget in attack.budgets or budgets:
                        for defense in defenses:
                            if defense.name != "none" and not mode.answers(defense.name):
                                continue  # the mode is not built against this defense (see the module doc)
                            identity = {"data": d.label, "defense": defense.label, "attack": attack.label,
                                        "label_mode": label_mode, "budget": budget, "seed": seed,
                                        "pool": pool.label}
                            if excluded({**identity, "data_key": d.name, "defense_key": defense.name,
                                         "attack_key": attack.name}):
                                continue
                            run_name = (f"{data_part}_{defense.label}_{attack.label}_{label_mode}_b{budget}"
                                        f"_s{seed}")
                            args = ["--data", d.name, "--defense", defense.name, "--attack", attack.name]
                            args += pool_args + common_args
                            for option, entry in (("data", d), ("defense", defense), ("attack", attack)):
                                for key, value in entry.params.items():
                                    args += [f"--{option}.{key}", format_value(value)]
                            args += ["--label_mode", mode.name]
                            for key, value in mode.params.items():
                                args += [f"--label_options.{key}", format_value(value)]
                            args += ["--budget", str(budget), "--seed", str(seed),
                                     "--output_dir", str(output_dir), "--name", run_name]
                            if "wandb.tags" not in common:
                                args += ["--wandb.tags", json.dumps([f"grid:{name}"])]
                            runs.append(GridRun(len(runs), run_name, args, identity, _weight(attack, budget)))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # pragma: no cover - labels are unique per dimension
        raise ConfigError("grid expands to duplicate run names")
    return runs


def set_sandbox(grid: Grid, mode: str | None) -> None:
    """`--sandbox MODE` for every run of the grid (after the file's own options: the command line wins)."""
    if mode is None:
        return
    for run in grid.runs:
        run.args.extend(["--sandbox", mode])  # GridRun is frozen; its list is its own


def load_grid(path: str | Path, output_dir: str | None = None) -> Grid:
    from .analysis.claims_spec import read_yaml_mapping

    path = Path(path)
    return grid_from_spec(read_yaml_mapping(path, "grid file"), path, output_dir)


def grid_from_spec(spec: dict[str, Any], path: Path, output_dir: str | None = None) -> Grid:
    """A parsed grid file -> Grid; its claims sections (a paper's claims may sit next to its runs) are taken out."""
    from .analysis.claims_spec import pop_claims_spec

    claims = pop_claims_spec(spec, path)
    name = str(spec.get("name") or path.stem)
    out = output_dir or spec.get("output_dir") or f"runs/{name}"
    return Grid(name=name, output_dir=str(out), runs=expand(spec, name=name, output_dir=str(out)), source=path,
                description=str(spec.get("description") or ""), claims=claims)


def check_keys(grid_spec_runs: Iterable[GridRun], attacks: bool = False) -> None:
    """Fail early, before hours of runs, when a grid names a data set, defense or attack nobody registered.

    The defender's process knows attacks by name only: an attacker-side process looks their names up, unless
    `attacks` (the conformance kit, which imports attack plugins anyway) looks them up here."""
    from .plugins import get_catalog

    catalog = get_catalog(attacks)
    seen: set[tuple[str, str]] = set()
    options = (("--data", "datasets"), ("--pool_data", "datasets"), ("--defense", "defenses"))
    runs = list(grid_spec_runs)
    for run in runs:
        for option, kind in options + ((("--attack", "attacks"),) if attacks else ()):
            if option not in run.args:
                continue
            key = run.args[run.args.index(option) + 1]
            if (kind, key) in seen or "." in key:
                continue
            seen.add((kind, key))
            try:
                catalog.registry(kind).get(key)
            except Exception as exc:
                raise ConfigError(f"grid: {exc}") from exc
    names = sorted({r.args[r.args.index("--attack") + 1] for r in runs if "--attack" in r.args})
    if names and not attacks:
        from .attacker.launch import ask_attacker

        errors = ask_attacker("off", (), lambda link: link.unknown(names))
        if errors:
            raise ConfigError(f"grid: {errors[0]}")


__all__ = ["Entry", "Grid", "GridRun", "expand", "format_value", "load_grid"]
