"""stealbench-mad: the MAD prediction-poisoning defense (Orekondy, Schiele & Fritz, ICLR 2020) for stealbench.

Registers the defenses ``mad`` and ``mad-argmax`` (the accuracy-preserving variant) and the paper's reproduction
``orekondy2020`` (`stealbench reproduce orekondy2020 [--quick]`) through the stealbench hooks.
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import stealbench

from .defense import MAD, MADArgmax, gram_last_layer, mad_perturb

try:
    __version__ = version("stealbench-mad")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["MAD", "MADArgmax", "gram_last_layer", "mad_perturb", "register_defenses", "register_reproductions"]


@stealbench.hookimpl
def register_defenses(register):
    register("mad", MAD)
    register("mad-argmax", MADArgmax)


@stealbench.hookimpl
def register_reproductions(register):
    # package data (pyproject.toml), so an installed wheel carries it; the quick version sits beside it
    register("orekondy2020", Path(__file__).resolve().parent / "orekondy2020.yaml",
             "Orekondy et al. 2020, MAD prediction poisoning: the abstract's claims on MNIST (small scale)")
