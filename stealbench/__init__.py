"""stealbench: an evaluation framework for model-stealing attacks and defenses.

Importing this package is cheap (no torch, no Lightning): the CLI's `--version`, `plugins` and `list`
commands rely on that. The public API lives in the submodules:

- `stealbench.defenses.Defense`, `stealbench.attacks.Attack`, `stealbench.data.ImageDataset`: base classes
- `stealbench.defender.oracle.Oracle`: the black-box API (the defender's side; an attack holds `ctx.oracle`, a
  handle that sends its queries there from the attacker's own process)
- `stealbench.hookspecs`: the pluggy hooks a plugin implements (`stealbench.hookimpl` marks them)
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("stealbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: Marker for plugin hook implementations: ``@stealbench.hookimpl``.
hookimpl = pluggy.HookimplMarker("stealbench")

__all__ = ["__version__", "hookimpl"]
