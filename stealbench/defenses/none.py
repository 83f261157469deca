"""The undefended baseline."""

from torch import Tensor

from .. import hookimpl
from .base import Defense


class NoDefense(Defense):
    """No defense: release the victim's probabilities unchanged."""

    preserves_argmax = True

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        return probs


@hookimpl
def register_defenses(register):
    register("none", NoDefense)
