"""stealbench-template: a minimal stealbench plugin. Copy it with ``new_plugin.py NAME`` and edit.

It registers one defense, ``template``: temperature smoothing of the released probabilities,
``y' = softmax(log(y) / temperature)``, which keeps the top-1 class and flattens (T > 1) the rest.
"""

from importlib.metadata import PackageNotFoundError, version

import torch
from torch import Tensor

import stealbench
from stealbench.defenses import Defense
from stealbench.errors import ConfigError

try:
    __version__ = version("stealbench-template")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0+unknown"


class TemplateDefense(Defense):
    """Temperature smoothing: y' = softmax(log y / T); keeps the top-1 class (template plugin)."""

    preserves_argmax = True  # the conformance kit checks this claim

    def __init__(self, temperature: float = 2.0) -> None:
        """
        Args:
            temperature: T > 0; T > 1 flattens the answer, T < 1 sharpens it, T = 1 releases it unchanged.
        """
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"defense.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        logp = probs.double().clamp_min(1e-12).log()
        return torch.softmax(logp / self.temperature, dim=-1).to(probs.dtype)


@stealbench.hookimpl
def register_defenses(register):
    register("template", TemplateDefense)
