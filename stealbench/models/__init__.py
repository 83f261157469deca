"""Architectures: built-in small nets and any timm model, all taking pixel-space images."""

from .factory import build_net

__all__ = ["build_net"]
