"""Plugin loading: built-in plugins and the ``stealbench`` entry-point groups, through the same hooks.

Two sides load different plugin modules. The defender's process (``get_catalog()``: ``fit``, ``grid``, the runner)
loads the built-ins of DEFAULT_PLUGINS and the group ``stealbench``; attacker-side modules (attacks and label modes)
are never imported there. The attacker's side (``get_catalog(attacks=True)``: the attacker's process, ``stealbench
list``/``plugins``, the conformance kit) also loads ATTACK_PLUGINS and the group ``stealbench.attacks``. Attacks and
label modes (ATTACKER_HOOKS) register only from the latter, and modules there register nothing else, so the
defender knows every other component, and attacks and label modes by name.

Environment switches:

- ``STEALBENCH_PLUGINS=a,b``: load only these external plugins (by entry-point or distribution name);
  ``STEALBENCH_PLUGINS=`` (empty) loads none of them. Built-ins always load.
- ``STEALBENCH_BLOCK_PLUGINS=a,b``: never load these (built-in module names can be blocked too).
- ``STEALBENCH_TRACE_HOOKS=1``: print every hook call and what it registered to stderr.
"""

from __future__ import annotations

import importlib
import os
import re
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
    "stealbench.defenses.labels",
    "stealbench.defenses.topk",
    "stealbench.defenses.rounding",
    "stealbench.defenses.noise",
    "stealbench.defenses.misinformation",
    "stealbench.defenses.modelguard",
    "stealbench.defenses.grad2",
    "stealbench.defenses.edm",
    "stealbench.models.builtin",
    "stealbench.models.resnet_cifar",
    "stealbench.data.digits",
    "stealbench.data.torchvision_sets",
    "stealbench.data.colour_sets",
    "stealbench.data.imagefolder",
    "stealbench.reproductions",
)

#: Built-in attacks and label modes: loaded only on the attacker's side, like the modules of ATTACK_ENTRY_POINT_GROUP.
ATTACK_PLUGINS: tuple[str, ...] = (
    "stealbench.attacks.jbda",
    "stealbench.attacks.jbda_variants",
    "stealbench.attacks.random",
    "stealbench.attacks.knockoff",
    "stealbench.attacks.activethief",
    "stealbench.attacks.dfme",
    "stealbench.attacks.maze",
    "stealbench.attacks.dfms_hl",
    "stealbench.attacker.label_modes.plain",
    "stealbench.attacker.label_modes.smooth",
    "stealbench.attacker.label_modes.invert",
    "stealbench.attacker.label_modes.ddae",
    "stealbench.attacker.label_modes.adaptive",
)
#: the hooks of attacker-side code: implemented only by modules of ATTACK_PLUGINS and ATTACK_ENTRY_POINT_GROUP
ATTACKER_HOOKS: tuple[str, ...] = ("register_attacks", "register_label_modes")

ENTRY_POINT_GROUP = "stealbench"
#: attacker-side plugins (attacks, label modes): imported only where attacks run (never by the defender's process)
ATTACK_ENTRY_POINT_GROUP = "stealbench.attacks"


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str | None  # None for built-ins
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> keys

    @property
    def builtin(self) -> bool:
        return self.distribution is None

    @property
    def source(self) -> str:
        """How registries and error messages name this plugin: external ones name their distribution."""
        return self.name if self.builtin else f"{self.name} ({self.distribution} {self.version})"


@dataclass
class Catalog:
    """Everything the loaded plugins registered."""

    defenses: Registry[Any]
    attacks: Registry[Any]
    architectures: Registry[Any]
    datasets: Registry[Any]
    label_modes: Registry[Any]
    reproductions: Registry[Any]
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


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so that `stealbench_mad`, `Stealbench-MAD` and `stealbench-mad` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _trace(msg: str) -> None:
    if os.environ.get("STEALBENCH_TRACE_HOOKS"):
        print(f"[stealbench trace] {msg}", file=sys.stderr)


def _check_side(plugin: Any, who: str, attack_side: bool) -> None:
    """Attacker-side modules register attacks and label modes (ATTACKER_HOOKS) and nothing else; other modules
    never register those (the defender's process imports them, and must not hold the attacker's code)."""
    hooks = {hook for hook in hookspecs.HOOK_KINDS if getattr(plugin, hook, None)}
    if attack_side and hooks - set(ATTACKER_HOOKS):
        raise PluginError(f"plugin {who} is an attacker-side plugin (entry-point group {ATTACK_ENTRY_POINT_GROUP!r}) "
                          f"but implements {', '.join(sorted(hooks - set(ATTACKER_HOOKS)))}; register those from a "
                          f"module in the group {ENTRY_POINT_GROUP!r}")
    if not attack_side and hooks & set(ATTACKER_HOOKS):
        raise PluginError(f"plugin {who} implements {', '.join(sorted(hooks & set(ATTACKER_HOOKS)))} in the "
                          f"entry-point group {ENTRY_POINT_GROUP!r}, which the defender's process imports; move "
                          f"them to their own module under [project.entry-points.\"{ATTACK_ENTRY_POINT_GROUP}\"]")


def make_plugin_manager(attacks: bool = False) -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    pm = pluggy.PluginManager("stealbench")
    pm.add_hookspecs(hookspecs)
    blocked = {_normalise(n) for n in _env_list("STEALBENCH_BLOCK_PLUGINS") or []}
    only_list = _env_list("STEALBENCH_PLUGINS")
    only = None if only_list is None else {_normalise(n) for n in only_list}
    infos: dict[str, PluginInfo] = {}

    builtins = [(m, False) for m in DEFAULT_PLUGINS] + [(m, True) for m in ATTACK_PLUGINS if attacks]
    for modname, attack_side in builtins:
        if _normalise(modname) in blocked:
            _trace(f"blocked built-in plugin {modname} (STEALBENCH_BLOCK_PLUGINS)")
            continue
        module = importlib.import_module(modname)
        _check_side(module, modname, attack_side)
        pm.register(module, name=modname)
        infos[modname] = PluginInfo(modname, __version__, None)

    seen: set[str] = set()
    groups = [(ENTRY_POINT_GROUP, False)] + ([(ATTACK_ENTRY_POINT_GROUP, True)] if attacks else [])
    for ep, attack_side in ((ep, side) for group, side in groups for ep in entry_points(group=group)):
        dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
        names = {_normalise(ep.name), _normalise(dist)}
        seen |= names
        if names & blocked or (only is not None and not names & only):
            why = "STEALBENCH_BLOCK_PLUGINS" if names & blocked else "not named in STEALBENCH_PLUGINS"
            _trace(f"skipped plugin {ep.name!r} from distribution {dist!r} ({why})")
            pm.set_blocked(ep.name)
            continue
        _trace(f"loading plugin {ep.name!r} = {ep.value!r} from distribution {dist!r}")
        # one distribution may name its defender-side and its attack module alike: one plugin, two pluggy names
        shared = attack_side and ep.name in infos and infos[ep.name].distribution == dist
        pm_name = f"{ep.name} (attacks)" if shared else ep.name
        if ep.name in infos and not shared:
            other = infos[ep.name]
            raise PluginError(
                f"two installed distributions define the stealbench plugin {ep.name!r}: {other.distribution!r} and "
                f"{dist!r}. Uninstall one of them, or skip one with STEALBENCH_BLOCK_PLUGINS=<distribution>."
            )
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not hide behind a traceback
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} failed to import ({type(exc).__name__}: {exc}). "
                f"Fix or uninstall it (pip uninstall {dist}), or skip it with STEALBENCH_BLOCK_PLUGINS={ep.name}."
            ) from exc
        _check_side(plugin, f"{ep.name!r} from distribution {dist!r}", attack_side)
        if pm.is_registered(plugin):
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} points at {ep.value!r}, which another plugin "
                f"({pm.get_name(plugin)!r}) already registered; give each entry point its own module"
            )
        try:
            pm.register(plugin, name=pm_name)
            pm.check_pending()  # hookimpls whose name matches no hookspec, e.g. a misspelled hook
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} implements hooks wrongly: {exc}. "
                f"Valid hooks: {', '.join(hookspecs.HOOK_KINDS)}."
            ) from exc
        version = ep.dist.version if ep.dist is not None else "unknown"
        infos[pm_name] = infos[ep.name] if shared else PluginInfo(ep.name, version, dist)
        if not any(getattr(plugin, hook, None) for hook in hookspecs.HOOK_KINDS):
            print(f"stealbench: warning: plugin {ep.name!r} from distribution {dist!r} implements no stealbench "
                  f"hook ({', '.join(hookspecs.HOOK_KINDS)}); did you forget @stealbench.hookimpl?", file=sys.stderr)
    unknown = sorted((only or set()) - seen)
    if unknown:
        print(f"stealbench: warning: STEALBENCH_PLUGINS names {', '.join(unknown)}, which no installed plugin "
              f"provides (installed: {', '.join(sorted(seen)) or 'none'})", file=sys.stderr)
    return pm, infos


def build_catalog(attacks: bool = False) -> Catalog:
    pm, infos = make_plugin_manager(attacks)
    registries = {kind: Registry(kind) for kind in hookspecs.HOOK_KINDS.values()}
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # One call per implementation, so each registration is attributed to the plugin that made it.
        for impl in hook.get_hookimpls():  # registration order
            info = infos[impl.plugin_name]

            def register(key: str, obj: Any, description: str = "", _info: PluginInfo = info, _kind: str = kind):
                registries[_kind].register(key, obj, description=description, source=_info.source)
                _info.registered.setdefault(_kind, []).append(key)
                _trace(f"{_info.name}.{hook_name} registered {_kind[:-1]} {key!r}")

            _trace(f"calling {impl.plugin_name}.{hook_name}")
            try:
                impl.function(*[register for _ in impl.argnames])  # pluggy allows a hookimpl to omit arguments
            except StealbenchError:
                raise  # already names the plugin (e.g. a taken key names both sources)
            except Exception as exc:
                raise PluginError(f"plugin {info.source} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    # Any timm model name is an architecture too; resolved lazily so that `list` never imports timm.
    from .models.timm_models import timm_candidates, timm_factory

    registries["architectures"].add_resolver(timm_factory, timm_candidates)
    unique = list({id(info): info for info in infos.values()}.values())  # a shared plugin once
    return Catalog(**registries, plugins=unique)


@lru_cache(maxsize=2)
def get_catalog(attacks: bool = False) -> Catalog:
    """The process-wide catalogue (plugins are loaded once). Without `attacks` (the defender's view) no attack or
    label-mode module is imported and those registries are empty; `attacks=True` is the attacker's side's view."""
    return build_catalog(attacks)
