"""The hooks a stealbench plugin implements.

Each hook receives a ``register`` callback; call it once per component::

    register(key: str, obj, description: str = "")

``key`` is a lowercase name used on the command line (``--defense mykey``); ``obj`` is:

- register_defenses:      a subclass of :class:`stealbench.defenses.Defense`
- register_attacks:       a subclass of :class:`stealbench.attacks.Attack`
- register_architectures: a factory ``(num_classes: int, in_chans: int, image_size: int) -> torch.nn.Module``
                          taking pixel-space images (normalisation is added by stealbench)
- register_datasets:      a subclass of :class:`stealbench.data.ImageDataset`
- register_label_modes:   a subclass of :class:`stealbench.attacker.label_modes.LabelMode` (how the attacker
                          turns answers into targets; adaptive attacks on the answers); it declares `answers`
                          (the defense keys it is built against, or "all") and `Options` (a dataclass).
                          Attacker-side code, like register_attacks: implement both only in a module of the
                          entry-point group ``stealbench.attacks``, which the defender's process never imports
- register_reproductions: the path of a reproduction file (a grid YAML with `paper:`, `utility:` and `claims:`,
                          see stealbench.reproduce); `stealbench reproduce KEY` runs it, `--quick` runs
                          `<stem>_quick.yaml` beside it. Ship the files as package data of the plugin.

Hooks must not import heavy libraries at module import time beyond torch: `stealbench list` loads every plugin.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("stealbench")

Register = Callable[..., None]


@hookspec
def register_defenses(register: Register) -> None:
    """Register defenses: ``register("mykey", MyDefense)``."""


@hookspec
def register_attacks(register: Register) -> None:
    """Register attack strategies: ``register("mykey", MyAttack)``."""


@hookspec
def register_architectures(register: Register) -> None:
    """Register network factories: ``register("mykey", make_net)``."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sets: ``register("mykey", MyDataset)``."""


@hookspec
def register_label_modes(register: Register) -> None:
    """Register label modes / adaptive attacks on the answers: ``register("mykey", MyLabelMode)``."""


@hookspec
def register_reproductions(register: Register) -> None:
    """Register paper reproductions: ``register("mypaper2024", Path(__file__).parent / "mypaper2024.yaml")``."""


#: hook name -> registry kind, the single source of truth for both
HOOK_KINDS: dict[str, str] = {
    "register_defenses": "defenses",
    "register_attacks": "attacks",
    "register_architectures": "architectures",
    "register_datasets": "datasets",
    "register_label_modes": "label_modes",
    "register_reproductions": "reproductions",
}
