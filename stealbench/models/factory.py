"""Build a classifier that takes pixel-space images: normalisation lives inside the model."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, PluginError, StealbenchError


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def build_net(arch: str, *, num_classes: int, input_shape: tuple[int, int, int], mean: Sequence[float],
              std: Sequence[float], catalog=None, pretrained: bool = False) -> nn.Module:
    """`Normalize -> arch` for registry key or timm name `arch`; raises UnknownKeyError with close matches.

    `pretrained`: start from the architecture's pretrained weights (timm models; a factory offers them as its
    ``pretrained`` attribute). RGB inputs are then normalised with the statistics the weights were trained with.
    """
    if catalog is None:
        from ..plugins import get_catalog

        catalog = get_catalog()
    factory = catalog.architectures.get(arch)
    try:
        who = f"architecture {arch!r} (plugin {catalog.architectures.source(arch)})"
    except (StealbenchError, AttributeError):
        who = f"architecture {arch!r}"
    in_chans, height, _ = input_shape
    if not pretrained:
        net = _built(who, lambda: factory(num_classes, in_chans, height))
        return nn.Sequential(Normalize(mean, std), _probed(who, net, num_classes, input_shape))
    make_pretrained = getattr(factory, "pretrained", None)
    if make_pretrained is None:
        raise ConfigError(f"--surrogate.pretrained: architecture {arch!r} has no pretrained weights; use a timm "
                          "model (e.g. resnet18, mobilenetv3_small_050) or --surrogate.pretrained false")
    net = _probed(who, _built(who, lambda: make_pretrained(num_classes, in_chans, height)), num_classes, input_shape)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if in_chans == 3 and len(cfg.get("mean", ())) == 3:
        mean, std = cfg["mean"], cfg["std"]
    return nn.Sequential(Normalize(mean, std), net)


def _broke(who: str, rule: str, problem: str) -> PluginError:
    return PluginError(f"{who} broke rule [{rule}]: it {problem}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _built(who: str, make) -> nn.Module:
    try:
        net = make()
    except StealbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the plugin, not its traceback
        raise _broke(who, "build", f"raised {type(exc).__name__} when built: {_first_line(exc)}") from exc
    if not isinstance(net, nn.Module):
        raise _broke(who, "module", f"built a {type(net).__name__}, not a torch nn.Module")
    return net


def _probed(who: str, net: nn.Module, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """One forward of two blank images: a net that raises, returns a tuple or the wrong number of classes is
    named now, in one line, not deep in a training loop (eval mode and no_grad: no statistics or weights move)."""
    was_training = net.training
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001
        raise _broke(who, "forward", f"raised {type(exc).__name__} on a batch of shape "
                                     f"{(2, *input_shape)}: {_first_line(exc)}") from exc
    finally:
        net.train(was_training)
    if not isinstance(out, Tensor):
        raise _broke(who, "logits", f"returned a {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (2, num_classes):
        raise _broke(who, "num-classes", f"returned logits of shape {tuple(out.shape)} for 2 images, expected "
                                         f"(2, {num_classes})")
    return net
