"""Defenses: transform the victim's output probabilities before release.

Built-ins live in the submodules and register themselves through the plugin hooks.
"""

from .base import Defense, DefenseSetup

__all__ = ["Defense", "DefenseSetup"]
