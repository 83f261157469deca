"""Label modes and adaptive attacks on answers: how the attacker turns the oracle's answers into targets.

Built-ins (each registered through the `register_label_modes` hook, like a third party's):
`soft`, `hard` (plain.py), `smooth`, `average` (smooth.py), `invert` (invert.py, with reverse_sigmoid.py and
estimate.py). The interface is in base.py; `stealbench list label_modes` shows every registered mode, the
defenses it answers and its options. These modules are attacker-side code (plugins.ATTACK_PLUGINS): the
defender's process holds a label mode by name and options only (attacker/label_choice.py).
"""

from .base import ALL, LabelMode, LabelOptions, ModeOracle, NoOptions, make_label_mode, mode_label
from .effect import effect_removed

__all__ = ["ALL", "LabelMode", "LabelOptions", "ModeOracle", "NoOptions", "effect_removed", "make_label_mode",
           "mode_label"]
