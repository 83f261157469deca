"""Check --trainer.accelerator / --trainer.devices against the machine before any work starts.

Lightning finds out only when the first Trainer is built (after data loading), and says so in a traceback.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

_CUDA = ("gpu", "cuda")


def _requested_gpus(devices: Any) -> int | None:
    """How many GPUs --trainer.devices asks for (None: unknown or 'auto')."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text.lstrip("-").isdigit():
            return _requested_gpus(int(text))
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
    return None


def check_accelerator(trainer_options: dict[str, Any] | None) -> None:
    """Raise ConfigError when the trainer options ask for hardware this machine does not have."""
    import torch

    options = trainer_options or {}
    accelerator = str(options.get("accelerator") or "auto").lower()
    if accelerator in _CUDA:
        if not torch.cuda.is_available():
            raise ConfigError(f"--trainer.accelerator {accelerator}: no CUDA GPU is visible "
                              "(torch.cuda.is_available() is False); drop --trainer.accelerator or use "
                              "--trainer.accelerator cpu")
        wanted = _requested_gpus(options.get("devices", "auto"))
        have = torch.cuda.device_count()
        if wanted is not None and wanted > have:
            raise ConfigError(f"--trainer.devices {options.get('devices')}: asks for {wanted} GPUs but {have} "
                              f"{'is' if have == 1 else 'are'} visible; use --trainer.devices {have} or fewer")
    elif accelerator == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--trainer.accelerator mps: Apple's MPS backend is not available on this machine "
                              "(torch.backends.mps.is_available() is False); drop --trainer.accelerator or use cpu")
    elif accelerator == "tpu":
        try:
            import torch_xla  # noqa: F401
        except ImportError:
            raise ConfigError("--trainer.accelerator tpu: torch_xla is not installed, so no TPU can be used; "
                              "drop --trainer.accelerator or use cpu") from None


__all__ = ["check_accelerator"]
