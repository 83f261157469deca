"""Any timm model by name. Created without pretrained weights unless asked (`--surrogate.pretrained true`).

Pretrained weights come, in this order, from ``$STEALBENCH_WEIGHTS_DIR/<model>.{safetensors,pth,bin}`` (a file
you copied there) or from timm's own sources (the Hugging Face hub cache, downloading when online). Offline and
with neither, the error names the hub id and URL to fetch and where to put the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import ConfigError

WEIGHTS_DIR_ENV = "STEALBENCH_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")


def local_weights(name: str) -> Path | None:
    """A weights file for timm model `name` under $STEALBENCH_WEIGHTS_DIR, if one is there."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for suffix in WEIGHT_SUFFIXES:
        path = Path(folder).expanduser() / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def create_pretrained(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """timm model `name` with its pretrained weights (new classifier head; first conv adapted to `in_chans`)."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"--surrogate.pretrained: timm has no pretrained weights for {name!r}; list the ones "
                          f"it has with `python -c \"import timm; print(timm.list_pretrained('{name}*'))\"`")
    path = local_weights(name)
    overlay = {"file": str(path)} if path is not None else None
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                                 pretrained_cfg_overlay=overlay)
    except Exception as exc:  # offline: huggingface_hub / urllib errors of many kinds
        folder = os.environ.get(WEIGHTS_DIR_ENV) or "<a folder of your choice>"
        sources = [f"the Hugging Face hub repository https://huggingface.co/{cfg.hf_hub_id} (model.safetensors)"
                   if cfg.hf_hub_id else "", f"{cfg.url}" if cfg.url else ""]
        raise ConfigError(
            f"--surrogate.pretrained: could not load timm's pretrained weights for {name!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). On a machine with internet, "
            f"fetch {' or '.join(s for s in sources if s)}, save it as {folder}/{name}.safetensors (or .pth) and "
            f"set {WEIGHTS_DIR_ENV}={folder}; or copy that machine's Hugging Face cache "
            f"(~/.cache/huggingface/hub) here."
        ) from exc


def timm_factory(name: str) -> Callable[[int, int, int], nn.Module] | None:
    """A factory for timm model `name`, or None when timm does not know it."""
    import timm  # lazy: ~1 s to import

    if not timm.is_model(name):
        return None

    def make(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    def make_pretrained(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
        return create_pretrained(name, num_classes, in_chans)

    make.__doc__ = f"timm model {name}"
    make.pretrained = make_pretrained  # type: ignore[attr-defined]  # see factory.build_net
    return make


def timm_candidates() -> list[str]:
    import timm

    return timm.list_models()
