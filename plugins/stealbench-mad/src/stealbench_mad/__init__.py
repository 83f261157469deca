"""stealbench-mad: the MAD prediction-poisoning defense (Orekondy, Schiele & Fritz, ICLR 2020) for stealbench.

Registers the defenses ``mad`` and ``mad-argmax`` (the accuracy-preserving variant) through the stealbench hooks.
"""

from importlib.metadata import PackageNotFoundError, version

import stealbench

from .defense import MAD, MADArgmax, gram_last_layer, mad_perturb

try:
    __version__ = version("stealbench-mad")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["MAD", "MADArgmax", "gram_last_layer", "mad_perturb", "register_defenses"]


@stealbench.hookimpl
def register_defenses(register):
    register("mad", MAD)
    register("mad-argmax", MADArgmax)
