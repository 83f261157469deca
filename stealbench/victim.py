"""Train, cache and load victims. A victim is a plain nn.Module taking pixel-space images.

The cache is trusted only as far as it can be checked: its key covers every setting that changes training
(VictimConfig's fields, the data, the seed, the architecture's parameter shapes and the trainer options that change
the result), every entry is sealed by the defender (an HMAC with a key under the cache folder that the attacker's
sandbox cannot read, see sealed_file.py) and names the key it was stored under, and a victim that is damaged
(NaN/inf weights) or useless (near-chance accuracy on a check set) is never stored.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import inspect
import io
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import console, sealed_file
from .config import VictimConfig
from .errors import ConfigError, StealbenchError
from .training import PHASE_KEYS, TrainSettings, fit, predict_probs

_CACHE_FORMAT = 2
#: VictimConfig fields that say where weights come from or go, not how they are trained
_NOT_TRAINING_FIELDS = frozenset({"cache", "cache_dir", "checkpoint"})
#: Trainer options that do not change the trained weights (hardware, logging, validation, profiling)
_NEUTRAL_TRAINER_OPTIONS = frozenset({
    "accelerator", "devices", "num_nodes", "benchmark", "profiler", "detect_anomaly", "barebones",
    "log_every_n_steps", "limit_val_batches", "limit_test_batches", "limit_predict_batches", "val_check_interval",
    "check_val_every_n_epoch", "inference_mode", "use_distributed_sampler", "enable_autolog_hparams",
    "model_registry", "reload_dataloaders_every_n_epochs", "default_root_dir",
})
#: Trainer options that cut training short: a victim trained under them is not the victim the key describes
_TRUNCATING_TRAINER_OPTIONS = ("limit_train_batches", "overfit_batches", "fast_dev_run", "max_time")
#: a victim below this multiple of chance accuracy on the check set is flagged and never cached
NEAR_CHANCE_FACTOR = 1.5


def default_cache_dir() -> Path:
    return Path(os.environ.get("STEALBENCH_CACHE_DIR") or Path.home() / ".cache" / "stealbench")


@lru_cache(maxsize=1)
def _trainer_defaults() -> dict[str, Any]:
    import lightning as L

    return {name: p.default for name, p in inspect.signature(L.Trainer.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _is_default(name: str, value: Any) -> bool:
    if value is None:
        return True
    default = _trainer_defaults().get(name, inspect.Parameter.empty)
    if name == "limit_train_batches" and isinstance(value, float) and value == 1.0:
        return True  # the fraction 1.0 is "all batches"; the integer 1 is a single batch
    try:  # True == 1 in Python, but fast_dev_run=True and fast_dev_run=1 are not both "the default"
        return bool(value == default) and isinstance(value, bool) == isinstance(default, bool)
    except Exception:  # noqa: BLE001 - exotic objects (plugins, profilers) never equal their default
        return False


def trainer_cache_policy(trainer: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(the trainer options that belong in the cache key, the options that forbid caching).

    Every option not known to be neutral is keyed, so an option a newer Lightning adds can cost a cache miss but
    never serve a wrong victim; an option whose value cannot be written into the key forbids caching.
    """
    keyed: dict[str, Any] = {}
    refuse: list[str] = []
    for name, value in sorted((trainer or {}).items()):
        if name in _NEUTRAL_TRAINER_OPTIONS or name in PHASE_KEYS or _is_default(name, value):
            continue
        if name in _TRUNCATING_TRAINER_OPTIONS:
            refuse.append(f"--trainer.{name} {value}")
            continue
        try:
            json.dumps(value)
        except TypeError:
            refuse.append(f"--trainer.{name} {type(value).__name__}")
            continue
        keyed[name] = value
    return keyed, refuse


def training_fields(cfg: VictimConfig) -> dict[str, Any]:
    """Every VictimConfig field that changes training: new fields are keyed without touching this module."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _NOT_TRAINING_FIELDS}


def cache_key(data_identity: dict, cfg: VictimConfig, seed: int, net: nn.Module,
              trainer: dict[str, Any] | None = None) -> str:
    # the parameter shapes catch an architecture whose definition changed under the same name
    shapes = [[name, list(t.shape)] for name, t in net.state_dict().items()]
    ident = {"format": _CACHE_FORMAT, "data": data_identity, "victim": {**training_fields(cfg), "seed": seed},
             "shapes": shapes, "trainer": trainer_cache_policy(trainer)[0]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the state's tensors (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def non_finite_tensors(net: nn.Module) -> list[str]:
    return [name for name, t in net.state_dict().items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


@dataclass
class VictimResult:
    net: nn.Module
    origin: str  # "trained", "cache", "checkpoint"
    path: str | None
    #: accuracy on the check set passed to obtain_victim (None: no check set)
    check_acc: float | None = None
    #: the check accuracy is below NEAR_CHANCE_FACTOR x chance: the victim barely learned (results are suspect)
    near_chance: bool = False
    #: why a trained victim was not stored in the cache (None: stored, or caching is off)
    not_cached: str | None = None


def load_state(path: Path, what: str = "victim.checkpoint") -> dict:
    try:
        # a cache entry given as a checkpoint is the user's choice: its seal is not checked, only taken off
        blob = torch.load(io.BytesIO(sealed_file.unsealed_body(Path(path).read_bytes())), map_location="cpu",
                          weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {str(path)!r} is a folder, not a weights file") from exc
    except Exception as exc:
        raise ConfigError(f"{what} {str(path)!r} is not a loadable PyTorch file: {exc}") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{what} {str(path)!r} holds no state_dict")
    if all(k.startswith("net.") for k in state):  # a Lightning checkpoint of stealbench's Classifier
        state = {k[len("net."):]: v for k, v in state.items()}
    return state


def _load_cached(path: Path, net: nn.Module, entry_key: str) -> bool:
    """Load a cache entry into `net` if it is intact, sealed by this cache's key and stored under `entry_key`;
    warn and return False otherwise (the caller retrains and replaces it)."""
    try:
        body = sealed_file.read(path, sealed_file.load_key(path.parent.parent))
        blob = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        state, stored_key = blob["state_dict"], blob["meta"].get("key")
    except sealed_file.NotSealed:
        console.info(f"[yellow]warning[/]: cached victim {console.escape(path)} is not sealed (written by an older stealbench); "
                     "retraining and replacing it")
        return False
    except sealed_file.BrokenSeal:
        console.info(f"[yellow]warning[/]: cached victim {console.escape(path)} fails its checksum (the file is damaged or was "
                     "rewritten by someone without the cache's key); retraining and replacing it")
        return False
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is retrained, not fatal
        console.info(f"[yellow]warning[/]: ignoring unreadable cached victim {console.escape(path)}: "
                     f"{console.escape((str(exc) or type(exc).__name__).splitlines()[0])}; retraining")
        return False
    if stored_key != entry_key:  # a sealed entry of another victim, copied over this one
        console.info(f"[yellow]warning[/]: cached victim {console.escape(path)} was stored for another victim (key {stored_key!r}, "
                     f"not {entry_key!r}); retraining and replacing it")
        return False
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        console.info(f"[yellow]warning[/]: cached victim {console.escape(path)} does not fit the architecture: "
                     f"{console.escape(str(exc).splitlines()[0])}; retraining")
        return False
    if non_finite_tensors(net):  # written by an older version that cached diverged victims
        console.info(f"[yellow]warning[/]: cached victim {console.escape(path)} holds NaN/inf weights; retraining")
        return False
    return True


def _store(path: Path, net: nn.Module, meta: dict) -> str | None:
    """Write a sealed cache entry atomically; returns why it was not stored, or None."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    body = io.BytesIO()
    torch.save({"state_dict": state, "meta": {**meta, "key": path.stem, "sha256": state_checksum(state)}}, body)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sealed_file.write(path, body.getvalue(), sealed_file.load_key(path.parent.parent))
    except (OSError, sealed_file.BrokenSeal) as exc:
        return f"the cache folder {path.parent} is not writable ({getattr(exc, 'strerror', None) or exc})"
    return None


def _check_cache_dir(root: Path) -> None:
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"--victim.cache_dir {str(root)!r}: {p} is a file, not a folder; point "
                                  "--victim.cache_dir at a folder (or set --victim.cache false)")
            return


@torch.no_grad()
def _check_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    probs = predict_probs(net, x, torch.device("cpu"))
    return float((probs.argmax(-1) == y).float().mean())


def obtain_victim(make_net: Callable[[], nn.Module], cfg: VictimConfig, data_identity: dict, seed: int,
                  train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int,
                  settings: TrainSettings, *, check_x: torch.Tensor | None = None,
                  check_y: torch.Tensor | None = None) -> VictimResult:
    """Load from --victim.checkpoint, else from the cache, else train (and cache).

    ``check_x``/``check_y``: labelled images the victim never trained on (the defender's holdout). The victim's
    accuracy on them is reported in the result; a near-chance victim is flagged and never cached.
    """
    torch.manual_seed(seed)  # the victim's initial weights depend on its seed only
    net = make_net()
    if cfg.checkpoint:
        try:
            net.load_state_dict(load_state(Path(cfg.checkpoint)))
        except RuntimeError as exc:
            raise ConfigError(f"victim.checkpoint {cfg.checkpoint!r} does not fit --victim.arch {cfg.arch}: "
                              f"{str(exc).splitlines()[0]}") from exc
        bad = non_finite_tensors(net)
        if bad:
            raise ConfigError(f"victim.checkpoint {cfg.checkpoint!r} holds NaN/inf weights ({', '.join(bad[:3])})")
        return _checked(VictimResult(net.eval(), "checkpoint", cfg.checkpoint), check_x, check_y, num_classes)

    keyed, refuse = trainer_cache_policy(settings.trainer)
    path = None
    if cfg.cache:
        root = Path(cfg.cache_dir or default_cache_dir())
        _check_cache_dir(root)
        path = root / "victims" / f"{cache_key(data_identity, cfg, seed, net, settings.trainer)}.pt"
    usable = path is not None and not refuse
    with _entry_lock(path if usable else None):  # a second run needing this victim waits, then loads it
        return _cached_or_trained(make_net, cfg, data_identity, seed, train_x, train_y, num_classes, settings,
                                  check_x, check_y, net, path, usable, keyed, refuse)


@contextmanager
def _entry_lock(path: Path | None) -> Iterator[None]:
    """Hold the cache entry's lock (`<key>.lock`, flock) while it is looked up, trained and stored, so that runs
    started together (`grid --jobs`) train each victim once. No lock where the folder is not writable."""
    handle = None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_suffix(".lock"), "a+b")
        except OSError:
            handle = None
    if handle is None:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.info(f"waiting for another run that is training this victim ({console.escape(path.name)})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def _cached_or_trained(make_net, cfg: VictimConfig, data_identity: dict, seed: int, train_x, train_y,
                       num_classes: int, settings: TrainSettings, check_x, check_y, net, path: Path | None,
                       usable: bool, keyed, refuse) -> VictimResult:
    if usable and path.is_dir():
        console.info(f"[yellow]warning[/]: the victim cache entry {console.escape(path)} is a folder, not a file; "
                     "training without the cache (remove that folder to cache again)")
        usable = False
    if usable and path.exists() and _load_cached(path, net, path.stem):
        result = _checked(VictimResult(net.eval(), "cache", str(path)), check_x, check_y, num_classes)
        if not result.near_chance:
            return result
        console.info(f"[yellow]warning[/]: the cached victim {console.escape(path)} is near chance accuracy; "
                     "retraining")
        torch.manual_seed(seed)
        net = make_net()

    targets = torch.nn.functional.one_hot(train_y, num_classes).float()
    try:
        net = fit(net, train_x, targets, cfg.epochs, settings, seed=seed, log_name="victim")
    except RuntimeError as exc:  # Adam's step size itself overflows float32 when the learning rate is huge
        if "overflow" not in str(exc):
            raise
        raise StealbenchError(f"victim training diverged (the optimiser step overflowed: {str(exc).splitlines()[0]});"
                              f" lower --victim.lr (now {cfg.lr})") from exc
    bad = non_finite_tensors(net)
    if bad:
        raise StealbenchError(f"victim training diverged (NaN/inf weights in {', '.join(bad[:3])}); lower "
                              f"--victim.lr (now {cfg.lr})")
    result = _checked(VictimResult(net.eval(), "trained", None), check_x, check_y, num_classes)
    if path is None:
        return result
    if refuse:
        result.not_cached = f"{', '.join(refuse)} changes how the victim trains"
    elif not usable:
        result.not_cached = f"the cache entry {path} is a folder"
    elif result.near_chance:
        result.not_cached = "its accuracy is near chance"
    else:
        result.not_cached = _store(path, net, {"arch": cfg.arch, "data": json.dumps(data_identity), "seed": seed,
                                               "trainer": keyed})
        if result.not_cached is None:
            result.path = str(path)
    if result.not_cached:
        console.info(f"victim not cached: {console.escape(result.not_cached)}")
    return result


def _checked(result: VictimResult, x, y, num_classes: int) -> VictimResult:
    """Measure the victim on the check set; flag (and say) when it is near chance."""
    if x is None or y is None or len(y) == 0:
        return result
    result.check_acc = _check_accuracy(result.net, x, y)
    chance = 1.0 / num_classes
    result.near_chance = result.check_acc < NEAR_CHANCE_FACTOR * chance
    if result.near_chance:
        console.info(f"[yellow]warning[/]: the victim ({result.origin}) has accuracy {result.check_acc:.3f} on "
                     f"{len(y)} held-out images, near chance ({chance:.3f}); it barely learned (check "
                     "--victim.epochs, --victim.lr and --trainer options). Results of this run are suspect.")
    return result
