"""Plugin loading: built-in plugins and the ``stealbench`` entry-point group, through the same hooks.

Environment switches:

- ``STEALBENCH_PLUGINS=a,b``: load only these external plugins (by entry-point or distribution name);
  ``STEALBENCH_PLUGINS=`` (empty) loads none of them. Built-ins always load.
- ``STEALBENCH_BLOCK_PLUGINS=a,b``: never load these (built-in module names can be blocked too).
- ``STEALBENCH_TRACE_HOOKS=1``: print every hook call and what it registered to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import __version__, hookspecs
from .errors import PluginError, StealbenchError
from .registry import Registry

#: Built-in components, registered through the same hooks a third-party plugin uses.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "stealbench.defenses.none",
    "stealbench.defenses.deceptive",
    "stealbench.attacks.jbda",
    "stealbench.attacks.random",
    "stealbench.models.builtin",
    "stealbench.data.digits",
    "stealbench.data.torchvision_sets",
)

ENTRY_POINT_GROUP = "stealbench"


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str | None  # None for built-ins
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> keys

    @property
    def builtin(self) -> bool:
        return self.distribution is None


@dataclass
class Catalog:
    """Everything the loaded plugins registered."""

    defenses: Registry[Any]
    attacks: Registry[Any]
    architectures: Registry[Any]
    datasets: Registry[Any]
    plugins: list[PluginInfo]

    def registry(self, kind: str) -> Registry[Any]:
        if kind not in hookspecs.HOOK_KINDS.values():
            raise StealbenchError(f"unknown kind {kind!r}; expected one of {', '.join(hookspecs.HOOK_KINDS.values())}")
        return getattr(self, kind)

    def versions(self) -> dict[str, str]:
        """Plugin name -> version, for results.json and requirement lines."""
        return {p.name: p.version for p in self.plugins}


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def _trace(msg: str) -> None:
    if os.environ.get("STEALBENCH_TRACE_HOOKS"):
        print(f"[stealbench trace] {msg}", file=sys.stderr)


def make_plugin_manager() -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    pm = pluggy.PluginManager("stealbench")
    pm.add_hookspecs(hookspecs)
    blocked = set(_env_list("STEALBENCH_BLOCK_PLUGINS") or [])
    only = _env_list("STEALBENCH_PLUGINS")
    infos: dict[str, PluginInfo] = {}

    for modname in DEFAULT_PLUGINS:
        if modname in blocked:
            continue
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        infos[modname] = PluginInfo(modname, __version__, None)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
        names = {ep.name, dist}
        if names & blocked or (only is not None and not names & set(only)):
            pm.set_blocked(ep.name)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not hide behind a traceback
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} failed to import ({type(exc).__name__}: {exc}). "
                f"Fix or uninstall it (pip uninstall {dist}), or skip it with STEALBENCH_BLOCK_PLUGINS={ep.name}."
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
            pm.check_pending()  # hookimpls whose name matches no hookspec, e.g. a misspelled hook
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} implements hooks wrongly: {exc}. "
                f"Valid hooks: {', '.join(hookspecs.HOOK_KINDS)}."
            ) from exc
        version = ep.dist.version if ep.dist is not None else "unknown"
        infos[ep.name] = PluginInfo(ep.name, version, dist)
    return pm, infos


def build_catalog() -> Catalog:
    pm, infos = make_plugin_manager()
    registries = {kind: Registry(kind) for kind in hookspecs.HOOK_KINDS.values()}
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # One call per implementation, so each registration is attributed to the plugin that made it.
        for impl in hook.get_hookimpls():  # registration order
            info = infos[impl.plugin_name]

            def register(key: str, obj: Any, description: str = "", _info: PluginInfo = info, _kind: str = kind):
                registries[_kind].register(key, obj, description=description, source=_info.name)
                _info.registered.setdefault(_kind, []).append(key)
                _trace(f"{_info.name}.{hook_name} registered {_kind[:-1]} {key!r}")

            _trace(f"calling {impl.plugin_name}.{hook_name}")
            impl.function(register=register)
    # Any timm model name is an architecture too; resolved lazily so that `list` never imports timm.
    from .models.timm_models import timm_candidates, timm_factory

    registries["architectures"].add_resolver(timm_factory, timm_candidates)
    return Catalog(**registries, plugins=list(infos.values()))


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    """The process-wide catalogue (plugins are loaded once)."""
    return build_catalog()
