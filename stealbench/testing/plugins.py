"""check_reproduction, check_plugin, and throwaway plugin distributions for tests."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

from ..errors import StealbenchError
from .attacks import check_architecture, check_attack, check_dataset
from .defenses import check_defense
from .world import ConformanceError, _dedupe


def check_reproduction(target: str) -> None:
    """Check a registered reproduction (or a reproduction YAML file) against :data:`REPRODUCTION_RULES`.

    Static: parses the file and its quick version, checks the names it uses; runs nothing."""
    from ..analysis.claims import FIELDS
    from ..analysis.claims_spec import is_yaml_path, reproduction_file
    from ..errors import ConfigError
    from ..grid import check_keys, load_grid
    from ..plugins import get_catalog

    who = f"reproduction {target!r}"
    try:
        paths = [reproduction_file(target)]
    except ConfigError as exc:
        raise ConformanceError(who, [("reproduction-file", str(exc))]) from exc
    if not is_yaml_path(target):
        quick = paths[0].with_name(f"{paths[0].stem}_quick{paths[0].suffix}")
        paths += [quick] if quick.is_file() else []
        who += f" (registered by plugin {get_catalog().reproductions.source(target)})"
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            grid = load_grid(path)
        except ConfigError as exc:
            failures.append(("reproduction-file", f"{path.name}: {exc}"))
            continue
        if grid.claims is None or not grid.claims.claims:
            failures.append(("reproduction-file", f"{path.name} has no `claims:` section"))
            continue
        try:
            check_keys(grid.runs, attacks=True)
        except ConfigError as exc:
            failures.append(("reproduction-keys", f"{path.name}: {exc}"))
        fields = {"runs": set(FIELDS["runs"]) | _defense_params(grid.runs), "utility": set(FIELDS["utility"])}
        sweep = grid.claims.utility
        if sweep is not None:
            fields["utility"] |= set(sweep.params)
            try:
                defense = get_catalog().defenses.get(sweep.defense)
                for setting in sweep.settings():
                    defense(**setting)
            except Exception as exc:
                failures.append(("reproduction-keys", f"{path.name}: utility defense {sweep.defense!r}: "
                                                      f"{type(exc).__name__}: {exc}"))
        for claim in grid.claims.claims:
            for i, part in enumerate(claim.parts):
                unknown = sorted((set(part.primary) | set(part.secondary or {}) | set(part.best_response or {}))
                                 - fields[part.source])
                if unknown:
                    failures.append(("reproduction-select", f"{path.name}: claim {claim.id!r} part {i} selects on "
                                     f"{unknown}, which {part.source} records lack (they have "
                                     f"{', '.join(sorted(fields[part.source]))})"))
    if failures:
        raise ConformanceError(who, _dedupe(failures))


def _defense_params(runs: list) -> set[str]:
    """The init parameters of every defense a grid runs: the fields its run records carry besides FIELDS."""
    from ..plugins import get_catalog

    names: set[str] = set()
    for run in runs:
        key = run.args[run.args.index("--defense") + 1]
        try:
            names |= set(inspect.signature(get_catalog().defenses.get(key)).parameters) - {"self"}
        except Exception:  # an unknown key is reported by reproduction-keys
            continue
        names |= {a.split(".", 2)[1] for a in run.args if a.startswith("--defense.")}
    return names


def check_plugin(name: str, **options: Any) -> list[str]:
    """Run the checks on every defense, attack, architecture and data set the plugin `name` registered.

    Returns the keys checked. ``options`` (e.g. ``budget=``, ``world=``) go to the checks that accept them.
    """
    from ..plugins import get_catalog

    catalog = get_catalog(attacks=True)  # the kit runs plugin code by design: attacks included
    plugins = {p.name: p for p in catalog.plugins}
    if name not in plugins:
        raise StealbenchError(f"no loaded plugin is called {name!r}; loaded: {', '.join(sorted(plugins))}")
    checked = []
    errors: list[ConformanceError] = []
    for kind, keys in plugins[name].registered.items():
        check = {"defenses": check_defense, "attacks": check_attack, "architectures": check_architecture,
                 "datasets": check_dataset, "reproductions": check_reproduction}.get(kind)
        for key in keys if check else []:
            try:
                check(key, **{k: v for k, v in options.items() if k in inspect.signature(check).parameters})
            except ConformanceError as exc:
                errors.append(exc)
            checked.append(key)
    if errors:
        raise ConformanceError(f"plugin {plugins[name].source}",
                               [(rule, f"{exc.who}: {detail}") for exc in errors for rule, detail in exc.failures])
    return checked


# ----------------------------------------------------------------------------------------------------------------
# Throwaway distributions and pytest fixtures (opt-in: pytest_plugins = ["stealbench.testing"])
# ----------------------------------------------------------------------------------------------------------------

def write_distribution(root: Path, name: str, modules: dict[str, str], *, entry_points: dict[str, str] | None = None,
                       version: str = "0.1.0", attack_entry_points: dict[str, str] | None = None) -> Path:
    """Write an importable distribution (modules + ``.dist-info`` with stealbench entry points) under `root`.

    Put `root` on ``sys.path`` and ``importlib.metadata`` sees it as installed. `modules` maps module names to
    source text (dedented); `entry_points` maps entry-point names to ``module`` or ``module:attr`` (group
    ``stealbench``; default: every module), `attack_entry_points` likewise for attack modules (group
    ``stealbench.attacks``; the modules they name are left out of the default group).
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    attack_eps = attack_entry_points or {}
    attack_modules = {v.partition(":")[0] for v in attack_eps.values()}
    eps = entry_points if entry_points is not None else {m: m for m in modules if m not in attack_modules}
    text = "[stealbench]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
    if attack_eps:
        text += "\n[stealbench.attacks]\n" + "".join(f"{k} = {v}\n" for k, v in attack_eps.items())
    (info / "entry_points.txt").write_text(text)
    return root


def _clear_catalog() -> None:
    from .. import plugins

    plugins.get_catalog.cache_clear()


