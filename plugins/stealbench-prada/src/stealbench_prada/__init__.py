"""stealbench-prada: the PRADA detector (Juuti, Szyller, Marchal & Asokan, EuroS&P 2019) for stealbench.

Registers the stateful defense ``prada`` through the stealbench hooks.
"""

from importlib.metadata import PackageNotFoundError, version

import stealbench

from .defense import PRADA, shapiro_w

try:
    __version__ = version("stealbench-prada")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PRADA", "register_defenses", "shapiro_w"]


@stealbench.hookimpl
def register_defenses(register):
    register("prada", PRADA)
