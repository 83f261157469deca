"""Any timm model by name, created without pretrained weights (nothing is downloaded)."""

from __future__ import annotations

from typing import Callable

from torch import nn


def timm_factory(name: str) -> Callable[[int, int, int], nn.Module] | None:
    """A factory for timm model `name`, or None when timm does not know it."""
    import timm  # lazy: ~1 s to import

    if not timm.is_model(name):
        return None

    def make(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    make.__doc__ = f"timm model {name}"
    return make


def timm_candidates() -> list[str]:
    import timm

    return timm.list_models()
