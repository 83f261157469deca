"""Keep the console for stealbench's own lines: Lightning's banners and small-data warnings off, in any process
that trains (the main one, the attacker's, data-parallel workers)."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """No GPU/TPU banners, no small-data warnings."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.trainer.connectors.signal_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*treespec.*")


__all__ = ["quiet_lightning"]
