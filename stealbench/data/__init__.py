"""Data sets: loaded once into tensors, split into victim-train / attacker-pool / evaluation sets."""

from .base import ImageDataset, Splits

__all__ = ["ImageDataset", "Splits"]
