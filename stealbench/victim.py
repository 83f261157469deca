"""Train, cache and load victims. A victim is a plain nn.Module taking pixel-space images."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import VictimConfig
from .errors import ConfigError
from .training import TrainSettings, fit

_CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("STEALBENCH_CACHE_DIR") or Path.home() / ".cache" / "stealbench")


def cache_key(data_identity: dict, cfg: VictimConfig, seed: int, net: nn.Module) -> str:
    # the parameter shapes catch an architecture whose definition changed under the same name
    shapes = [[name, list(t.shape)] for name, t in net.state_dict().items()]
    ident = {"format": _CACHE_FORMAT, "data": data_identity, "arch": cfg.arch, "shapes": shapes, "epochs": cfg.epochs,
             "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": seed}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class VictimResult:
    net: nn.Module
    origin: str  # "trained", "cache", "checkpoint"
    path: str | None


def load_state(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"victim.checkpoint {str(path)!r} does not exist") from exc
    except Exception as exc:
        raise ConfigError(f"victim.checkpoint {str(path)!r} is not a loadable PyTorch file: {exc}") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"victim.checkpoint {str(path)!r} holds no state_dict")
    if all(k.startswith("net.") for k in state):  # a Lightning checkpoint of stealbench's Classifier
        state = {k[len("net."):]: v for k, v in state.items()}
    return state


def obtain_victim(make_net: Callable[[], nn.Module], cfg: VictimConfig, data_identity: dict, seed: int,
                  train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int,
                  settings: TrainSettings) -> VictimResult:
    """Load from --victim.checkpoint, else from the cache, else train (and cache)."""
    torch.manual_seed(seed)  # the victim's initial weights depend on its seed only
    net = make_net()
    if cfg.checkpoint:
        try:
            net.load_state_dict(load_state(Path(cfg.checkpoint)))
        except RuntimeError as exc:
            raise ConfigError(f"victim.checkpoint {cfg.checkpoint!r} does not fit --victim.arch {cfg.arch}: "
                              f"{str(exc).splitlines()[0]}") from exc
        return VictimResult(net.eval(), "checkpoint", cfg.checkpoint)

    path = Path(cfg.cache_dir or default_cache_dir()) / "victims" / f"{cache_key(data_identity, cfg, seed, net)}.pt"
    if cfg.cache and path.exists():
        try:
            net.load_state_dict(load_state(path))
            return VictimResult(net.eval(), "cache", str(path))
        except (ConfigError, RuntimeError) as exc:  # a damaged cache entry is retrained, not fatal
            print(f"warning: ignoring unreadable cached victim {path}: {str(exc).splitlines()[0]}")

    targets = torch.nn.functional.one_hot(train_y, num_classes).float()
    net = fit(net, train_x, targets, cfg.epochs, settings, seed=seed, log_name="victim")
    if cfg.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                    "meta": {"arch": cfg.arch, "data": json.dumps(data_identity), "seed": seed}}, tmp)
        tmp.replace(path)  # atomic: a concurrent run never reads half a file
    return VictimResult(net.eval(), "trained", str(path) if cfg.cache else None)
