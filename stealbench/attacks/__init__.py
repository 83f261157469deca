"""Attack strategies: choose queries, turn answers into training targets, train the surrogate in rounds."""

from .base import Attack, AttackContext

__all__ = ["Attack", "AttackContext"]
