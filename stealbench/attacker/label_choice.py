"""A label mode as the defender holds it: a name and its options as plain data; built only on the attacker's side.

Like an attack (choice.py), a label mode is attacker-side code: its module is registered from ATTACK_PLUGINS or the
entry-point group ``stealbench.attacks`` (plugins.py), which the defender's process never imports. The defender
checks the choice's shape only (:meth:`LabelModeChoice.checked`: a key, a mapping of JSON-able options) and names
it with :func:`mode_label`; the attacker's side imports the mode, checks its options and builds it
(label_modes.base.build_label_mode), answering with plain data that the defender checks (defender/schema.py) and
treats as the attacker's word: the oracle counts every real query against the budget whatever the mode says.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .choice import Choice

DEFAULT_LABEL_MODE = "soft"


class LabelOptions(dict):
    """The options given to a label mode (`--label_options.k 4` -> ``LabelOptions(k=4)``): a plain mapping,
    checked against the chosen mode's own ``Options`` dataclass on the attacker's side (make_label_mode)."""


def _plain(value: Any) -> bool:
    """JSON-able: what a message between the two sides can carry (transport.encode), tensors excluded."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


@dataclass
class LabelModeChoice(Choice):
    """`key`: a label mode's registry key; `options`: option name -> JSON-able value (`--label_options.*`)."""

    key: str = DEFAULT_LABEL_MODE

    @classmethod
    def checked(cls, key: Any, options: Any) -> "LabelModeChoice":
        """The choice, its shape checked here (the defender's side): ConfigError in one line if it is no name
        and mapping of plain values. Whether the mode exists and takes these options is the attacker's side's."""
        from ..errors import ConfigError

        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"--label_mode expects a label mode's registry key (stealbench list label_modes), "
                              f"got {key!r}")
        if options is None:
            options = {}
        if not isinstance(options, dict) or not all(isinstance(k, str) and k for k in options):
            raise ConfigError(f"--label_options must be a mapping of option names to values, got {options!r}")
        for name, value in options.items():
            if not _plain(value):
                raise ConfigError(f"--label_options.{name} must be plain data (a number, text, true/false, null "
                                  f"or a list or mapping of those), got {type(value).__name__}")
        return cls(key.strip(), dict(options))


def mode_label(key: str, options: dict[str, Any] | None) -> str:
    """How runs name a label mode: its key, then its given options (`average-k4-scale0.05`), sorted by name, so
    variants of one mode are told apart in run names, identities and leaderboards."""
    parts = [key]
    for name, value in sorted((options or {}).items()):
        text = {True: "true", False: "false", None: "null"}.get(value, value) if not isinstance(value, (int, float)) \
            or isinstance(value, bool) else value
        parts.append(name + re.sub(r"[^A-Za-z0-9.+-]+", "", str(text)))
    return "-".join(parts)


__all__ = ["DEFAULT_LABEL_MODE", "LabelModeChoice", "LabelOptions", "mode_label"]
