"""An attack as the defender holds it: a name and raw option values; built only on the attacker's side.

`AttackChoice` is plain data (`--attack NAME`, its `--attack.KEY VALUE` options as typed, a config file's values as
loaded): it travels to the attacker's process as a message, never as an object. `build_attack` runs there: it
loads the attack plugins (plugins.get_catalog(attacks=True)), parses the options against the class's signature
with jsonargparse (the same types and messages as every other component's options), constructs the attack and,
given the run's limits, calls its `validate`. What comes back to the defender is `resolved`: plain data for the
run's config, its console line and its plugin versions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

#: the command whose options these are (error messages point at its help)
PROG = "stealbench fit"
DEFAULT_ATTACK = "jbda"


@dataclass
class Choice:
    """An attacker-side component as the defender holds it: `key` (its name) and `options` (option name ->
    JSON-able value), sent to the attacker's side as a message; only that side imports and builds it."""

    key: str
    options: dict[str, Any] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        return {"key": self.key, "options": dict(self.options)}

    @classmethod
    def from_data(cls, data: dict[str, Any]):
        return cls(str(data["key"]), dict(data.get("options") or {}))


@dataclass
class AttackChoice(Choice):
    """`key`: a registry key or a class path; `options`: option name -> JSON-able value (command-line text as
    given: the attacker's side converts it to the option's type)."""

    key: str = DEFAULT_ATTACK


def plugin_of(catalog: Any, kind: str, key: str) -> dict[str, str]:
    """{plugin name: version} of the plugin that registered `key` as a `kind` (attacks, label_modes), or {}."""
    return next(({p.name: p.version} for p in catalog.plugins if key in p.registered.get(kind, [])), {})


def _attack_class(key: str):
    """(class, registry key or class path, plugin source or None, {plugin name: version}) for `key`."""
    from ..errors import ConfigError, StealbenchError
    from ..plugins import get_catalog

    catalog = get_catalog(attacks=True)
    registry = catalog.attacks
    if key in registry:
        cls, source = registry.get(key), registry.source(key)
    elif "." in key:  # a class path, as jsonargparse allows for every component
        module, _, name = key.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"--attack {key!r}: no such class ({type(exc).__name__}: {exc})") from None
        entry = next((e for e in registry.entries() if e.obj is cls), None)
        key, source = (entry.key, entry.source) if entry else (key, None)  # no plugin registered it
    else:
        try:
            registry.get(key)
        except StealbenchError as exc:
            raise ConfigError(f"--attack: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover - registry.get raised
    return cls, key, source, plugin_of(catalog, "attacks", key)


def unknown_keys(keys: list[str]) -> list[str]:
    """The registry's message for each key no loaded attack plugin registered (class paths are not looked up)."""
    from ..errors import StealbenchError
    from ..plugins import get_catalog

    registry = get_catalog(attacks=True).attacks
    errors = []
    for key in keys:
        if "." in key:
            continue
        try:
            registry.get(key)
        except StealbenchError as exc:
            errors.append(str(exc))
    return errors


def _parser(cls):
    from jsonargparse import ArgumentParser

    from ..attacks.base import Attack

    parser = ArgumentParser(prog=PROG, exit_on_error=False, default_env=False)
    parser.add_subclass_arguments(Attack, "attack", required=False, fail_untyped=False)
    return parser


def build_attack(choice: AttackChoice, limits: dict[str, int] | None = None):
    """(attack, resolved) for `choice`; ConfigError (one line, naming the option) when it is no valid attack.

    `limits`: {budget, num_classes, pool_size} for `Attack.validate`; None checks construction only."""
    from jsonargparse import ArgumentError

    from ..arguments import jsonargparse_message
    from ..attacks.base import Attack
    from ..config import check_seed
    from ..errors import ConfigError, StealbenchError

    cls, key, source, plugin = _attack_class(choice.key)
    who = f"{key!r} (plugin {source})" if source else repr(key)
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise ConfigError(f"attack {who} is a {type(cls).__name__}, not a stealbench Attack")
    path = f"{cls.__module__}.{cls.__qualname__}"
    parser = _parser(cls)
    try:
        cfg = parser.parse_object({"attack": {"class_path": path, "init_args": dict(choice.options)}})
    except ArgumentError as exc:
        raise ConfigError(jsonargparse_message(str(exc), PROG, describe=lambda p: f"{key} ({p})")) from None
    init_args = dict(cfg.attack.init_args or {})
    for name, value in init_args.items():  # an option named *seed is a seed; null: the run's --seed
        if (name == "seed" or name.endswith("_seed")) and value is not None:
            check_seed(f"attack.{name}", value)
    try:
        attack = parser.instantiate_classes(cfg).attack
        if limits is not None:
            attack.validate(budget=int(limits["budget"]), num_classes=int(limits["num_classes"]),
                            pool_size=int(limits["pool_size"]))
    except Exception as exc:  # jsonargparse wraps errors raised in __init__: the attack's own words come back
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, StealbenchError):
            cause = cause.__cause__
        if isinstance(cause, StealbenchError):
            raise ConfigError(str(cause).splitlines()[0] if str(cause) else f"attack {key!r} refused") from None
        raise ConfigError(f"attack {who} failed to build: {type(cause).__name__}: "
                          f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
    import yaml

    dumped = yaml.safe_load(parser.dump(cfg, skip_check=True)).get("attack") or {}
    return attack, {"key": key, "source": source, "plugin": plugin, "params": _params(attack),
                    "config": {"class_path": path, "init_args": dumped.get("init_args") or {}},
                    "needs_pool": bool(getattr(attack, "needs_pool", True))}  # False: a data-free attack


def attack_help(key: str) -> str:
    """`stealbench fit --attack.help KEY`: the attack's options, as jsonargparse lists them."""
    from jsonargparse import ArgumentParser

    cls, key, _, _ = _attack_class(key)
    parser = ArgumentParser(prog=f"{PROG} --attack {key}", default_env=False)
    parser.add_class_arguments(cls, "attack", fail_untyped=False)
    return parser.format_help()


def _params(attack: Any) -> str:
    """The console's `attack` line: each plain option as key=value (tensors and modules left out)."""
    import torch

    cfg = {k: v for k, v in attack.config().items() if not isinstance(v, (torch.Tensor, torch.nn.Module))}
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


__all__ = ["AttackChoice", "Choice", "DEFAULT_ATTACK", "plugin_of", "attack_help", "build_attack", "unknown_keys"]
