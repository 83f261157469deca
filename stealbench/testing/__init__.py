"""Conformance kit for defenses and attacks, built-in or third-party (public API).

Plain check functions, in the spirit of scikit-learn's ``check_estimator``::

    from stealbench.testing import check_defense, check_attack, check_plugin

    check_defense("mad")              # a registry key, a Defense subclass, or a zero-argument factory
    check_attack("jbda", budget=150)
    check_plugin("mad")               # everything the plugin `mad` registered

Each raises :class:`ConformanceError` (an ``AssertionError``) listing every broken rule, naming the component,
the plugin (and distribution) that registered it, and the rule. The rules are in :data:`DEFENSE_RULES` and
:data:`ATTACK_RULES`.

Opt-in pytest plugin, like pytest's ``pytester``: add ``pytest_plugins = ["stealbench.testing"]`` to a
``conftest.py`` to get the fixtures ``stealbench_catalog`` (a freshly loaded catalogue),
``stealbench_distribution`` (install a throwaway plugin distribution for one test), ``defense_setup`` and
``attack_context`` (the tiny, digits-sized worlds the checks run in).

Everything runs on tiny random 8x8 images with a tiny victim, in well under a second per component on a CPU.
The kit is split by job: ``rules`` (the rule ids), ``world`` (the tiny world, the instrumented oracle),
``defenses`` (its probes and the few-classes and hidden-state checks in ``defense_probes``), ``attacks``,
``plugins``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from ..attacks.base import AttackContext
from ..defenses.base import DefenseSetup
from .attacks import check_architecture, check_attack, check_dataset
from .defenses import check_defense
from .plugins import _clear_catalog, check_plugin, check_reproduction, write_distribution
from .rules import ATTACK_RULES, DEFENSE_RULES, REPRODUCTION_RULES
from .world import ConformanceError, TinyWorld, make_attack_context, make_defense_setup

__all__ = [
    "ATTACK_RULES",
    "DEFENSE_RULES",
    "REPRODUCTION_RULES",
    "ConformanceError",
    "TinyWorld",
    "check_architecture",
    "check_attack",
    "check_dataset",
    "check_defense",
    "check_plugin",
    "check_reproduction",
    "make_attack_context",
    "make_defense_setup",
    "write_distribution",
]

try:
    import pytest
except ImportError:  # pragma: no cover - the kit's functions work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def stealbench_catalog() -> Iterator[Any]:
        """The catalogue, loaded afresh for this test (and cleared afterwards)."""
        from ..plugins import get_catalog

        _clear_catalog()
        yield get_catalog(attacks=True)  # every kind, attacks included (a test may run them)
        _clear_catalog()

    @pytest.fixture
    def stealbench_distribution(tmp_path: Path, monkeypatch: Any) -> Iterator[Callable[..., Path]]:
        """Factory: ``stealbench_distribution("stealbench-x", {"stealbench_x": SOURCE})`` installs a throwaway
        plugin distribution for this test (on sys.path, seen by importlib.metadata) and clears the catalogue."""
        import importlib
        import sys

        added: list[str] = []

        def make(name: str, modules: dict[str, str], **options: Any) -> Path:
            root = write_distribution(tmp_path / f"dist-{name}", name, modules, **options)
            monkeypatch.syspath_prepend(str(root))
            importlib.invalidate_caches()
            added.extend(modules)
            _clear_catalog()
            return root

        yield make
        for module in added:
            sys.modules.pop(module, None)
        _clear_catalog()

    @pytest.fixture
    def defense_setup() -> DefenseSetup:
        """The DefenseSetup the conformance checks use (tiny victim, random 8x8 images)."""
        return make_defense_setup()

    @pytest.fixture
    def attack_context() -> Callable[..., AttackContext]:
        """Factory ``attack_context(budget=150, defense=None)`` for an instrumented tiny AttackContext."""
        return lambda budget=150, defense=None: make_attack_context(budget, defense=defense)
