"""Data-parallel training phases: many devices, one experiment.

Lightning's `ddp` strategy re-executes the whole script once per rank, which would run the whole experiment (victim
cache, defense, oracle, attack, results.json, W&B run) N times. Here only the training call is parallel: `fit` maps
a DDP-family strategy (or Lightning's own choice of DDP for several devices) to DDP with workers started for that
call (forked from stealbench's fork server, or spawned once CUDA is initialised in the caller). The workers train
on distinct shards of every epoch (`shard`, used by the loader), and rank 0's weights come back to the calling
process (the main process, or the attacker's), which goes on alone.

What crosses to the workers is pickled: the module, the loader and the Trainer. So the run's logger stays in the
calling process (the workers train without one; the last epoch's metrics are logged here afterwards), and the
loader's tensors travel through a temporary file rather than through shared memory (containers often cap
/dev/shm at 64 MB, less than one CIFAR-10 training set).

Out of scope: FSDP / DeepSpeed / XLA (sharded models; every model here fits on one device) and several nodes (each
node would start its own experiment).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from .errors import ConfigError, StealbenchError


def start_method() -> str:
    """How this call's workers start: forked from stealbench's fork server (torch and Lightning already imported,
    no CUDA or OpenMP state inherited) while this process has not touched CUDA, else spawned (a fresh interpreter
    each; Lightning refuses fork-based starts once CUDA is initialised here)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return "forkserver"
    return "spawn"

_OUT_OF_SCOPE = ("fsdp", "deepspeed", "xla", "tpu", "model_parallel")


class DistributedTrainingError(StealbenchError):
    """A DDP worker process failed; the message carries its traceback."""


# -- sharding (called by the loader inside each worker) ----------------------------------------------------------
def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the process group this process trains in; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_size(n: int) -> int:
    """Samples per rank in an epoch of `n`: the same on every rank (so no rank waits for a batch that never comes)."""
    _, world = rank_and_world()
    return -(-n // world)


def shard(perm: Tensor) -> Tensor:
    """This rank's part of an epoch's permutation (the same permutation on every rank): every world-th sample from
    the rank's offset. When `world` does not divide the epoch, the first samples fill the last places (as
    torch's DistributedSampler does), so every rank gets `shard_size` samples. Outside DDP: `perm` unchanged."""
    rank, world = rank_and_world()
    if world == 1:
        return perm
    total = shard_size(len(perm)) * world
    if total > len(perm):
        perm = torch.cat([perm, perm[: total - len(perm)]])
    return perm[rank::world]


# -- choosing the strategy -----------------------------------------------------------------------------------------
def _ddp_params(strategy: Any) -> dict[str, Any] | None:
    """DDPStrategy options of a DDP-family `strategy` (name or {class_path, init_args}); None if not DDP.

    Raises ConfigError for strategies that cannot work here."""
    from lightning.pytorch.strategies import DDPStrategy, ParallelStrategy, Strategy, StrategyRegistry

    if strategy is None or (isinstance(strategy, str) and strategy.lower() == "auto"):
        return None
    if isinstance(strategy, str):
        name = strategy.lower()
        if any(word in name for word in _OUT_OF_SCOPE):
            raise ConfigError(
                f"--trainer.strategy {strategy}: not supported. stealbench runs several devices as data-parallel "
                "DDP (--trainer.strategy ddp); sharded strategies (FSDP, DeepSpeed) and XLA/TPU are out of scope "
                "(every victim and surrogate here fits on one device)")
        if name not in StrategyRegistry:
            return None  # Lightning's own error names the valid choices
        entry = StrategyRegistry[name]
        if entry["strategy"] is not DDPStrategy:
            return None  # single_device and the like
        return {k: v for k, v in entry["init_params"].items() if k != "start_method"}
    if isinstance(strategy, dict) and isinstance(strategy.get("class_path"), str):  # from a YAML config
        path = strategy["class_path"]
        if path.rsplit(".", 1)[-1] == "DDPStrategy":
            return {k: v for k, v in (strategy.get("init_args") or {}).items() if k != "start_method"}
        raise ConfigError(f"--trainer.strategy {path}: not supported; use --trainer.strategy ddp (data parallel) "
                          "or leave it at auto")
    if isinstance(strategy, DDPStrategy) or isinstance(strategy, ParallelStrategy):
        raise ConfigError(
            f"trainer strategy {type(strategy).__name__}(...): give the strategy by name (ddp, "
            "ddp_find_unused_parameters_true, ...): each training phase needs a fresh one, and stealbench starts "
            "its workers itself")
    if isinstance(strategy, Strategy):
        return None
    raise ConfigError(f"--trainer.strategy {strategy!r}: expected a strategy name such as auto or ddp")


def check_trainer_options(options: dict[str, Any]) -> None:
    """Refuse, before anything trains, --trainer settings that cannot run as one experiment."""
    _ddp_params(options.get("strategy", "auto"))
    nodes = options.get("num_nodes", 1)
    if nodes not in (None, 1, "1"):
        raise ConfigError(f"--trainer.num_nodes {nodes}: not supported (each node would start its own experiment); "
                          "use the devices of one machine with --trainer.devices N")


@dataclass
class Parallel:
    """How one training call runs data parallel (see `plan`)."""

    world_size: int
    seed: int
    callback: Any = field(default=None)


def plan(options: dict[str, Any], *, seed: int) -> tuple[dict[str, Any], Parallel | None]:
    """Trainer options for one training call, and how it runs in parallel (None: in this process).

    `options` are the user's --trainer options (phase keys removed). A DDP-family strategy with one device, or a
    single-device setup, trains here as before; several devices train in DDP workers started for the call.
    """
    check_trainer_options(options)
    strategy = options.get("strategy", "auto")
    params = _ddp_params(strategy)
    auto = strategy is None or (isinstance(strategy, str) and strategy.lower() == "auto")
    if params is None and not auto:
        return options, None
    if options.get("devices") in (1, "1") or (isinstance(options.get("devices"), (list, tuple))
                                              and len(options["devices"]) == 1):
        return ({**options, "strategy": "auto"} if params is not None else options), None
    probe = _probe({**options, "strategy": "ddp" if params is not None else "auto"})
    from lightning.pytorch.strategies import DDPStrategy

    if not isinstance(probe.strategy, DDPStrategy) or probe.world_size <= 1:
        if params is None:
            return options, None
        return {**options, "strategy": "auto"}, None  # DDP on one device: no process group needed
    parallel = Parallel(world_size=probe.world_size, seed=seed)
    parallel.callback = WorkerSetup(seed)
    strategy = DDPStrategy(start_method=start_method(), **(params or {}))
    return {**options, "strategy": strategy, "callbacks": [parallel.callback]}, parallel


def _probe(options: dict[str, Any]):
    """A throwaway Trainer, so that Lightning itself resolves accelerator, devices and its strategy."""
    import lightning as L

    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **options)


# -- in the workers -----------------------------------------------------------------------------------------------
class WorkerSetup(Callback):
    """Runs first in each worker: the loader's data back from the spill file, per-rank randomness, quiet logs."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.loader: Any = None
        self.spill: str | None = None  # file holding the loader's tensors while they cross to the workers
        self.names: list[str] = []
        self.env: dict[str, str] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickled in a worker before Lightning sets up the process group: quiet its banners from the start; a
        # worker forked from the fork server starts with the server's environment: take the caller's
        self.__dict__.update(state)
        os.environ.update(self.env or {})
        quiet_workers()

    def setup(self, trainer, pl_module, stage: str) -> None:
        _die_with_parent()
        if self.spill is not None:
            tensors = torch.load(self.spill, mmap=True, weights_only=True)
            for name in self.names:
                setattr(self.loader, name, tensors[name])
        # the module arrived through shared memory, the same pages on every rank: each rank trains its own copy
        with torch.no_grad():
            for tensor in list(pl_module.parameters()) + list(pl_module.buffers()):
                tensor.data = tensor.data.clone()
        # independent dropout/augmentation draws per rank
        torch.manual_seed(rank_seed(self.seed, trainer.global_rank))


def quiet_workers() -> None:
    """stealbench's console quiet (quiet.quiet_lightning), plus the process-group banners of every rank."""
    import logging
    import warnings

    from .quiet import quiet_lightning

    quiet_lightning()
    for name in ("lightning.fabric.utilities.distributed", "lightning.pytorch.strategies.ddp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # rank 0's epoch loss is what comes back; no need to all-reduce it every epoch
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")


def rank_seed(seed: int, rank: int) -> int:
    text = f"stealbench/ddp/{int(seed)}/{int(rank)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 2**63


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the process that started it dies (no orphaned workers)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


# -- around trainer.fit in the calling process -------------------------------------------------------------------
def _rebuild_generator(device: str, state: bytes) -> torch.Generator:
    generator = torch.Generator(device)
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


def _reduce_generator(generator: torch.Generator):
    # torch pickles a generator's state as a temporary tensor; multiprocessing would pass it as a shared-memory
    # handle that is gone by the time the worker reads it, so the state crosses as bytes
    return _rebuild_generator, (str(generator.device), generator.get_state().numpy().tobytes())


def _register_reducers() -> None:
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(torch.Generator, _reduce_generator)  # only multiprocessing's pickling is affected


@contextmanager
def launching(parallel: Parallel | None, trainer, loader: Any, *, log_name: str, logger: Any = None) -> Iterator[None]:
    """Wraps `trainer.fit(module, loader)` for a parallel call; nothing to do for one process.

    The loader's tensors go to the workers by file; afterwards they are put back, the last epoch's metrics go to
    the run's `logger`, and a worker's failure becomes one DistributedTrainingError.
    """
    if parallel is None:
        yield
        return
    from torch.multiprocessing.spawn import ProcessException

    _register_reducers()
    if trainer.strategy.launcher is not None and getattr(trainer.strategy, "_start_method", None) == "forkserver":
        from .forkserver import warm_up

        warm_up()  # the fork server with stealbench's imports (already running under `stealbench fit`)
    callback = parallel.callback
    tensors = {name: value for name, value in vars(loader).items() if isinstance(value, Tensor)}
    folder = tempfile.mkdtemp(prefix="stealbench-ddp-")
    port_before = os.environ.get("MASTER_PORT")
    try:
        torch.save({name: t.detach().cpu().contiguous() for name, t in tensors.items()},
                   os.path.join(folder, "data.pt"))
        callback.loader, callback.spill, callback.names = loader, os.path.join(folder, "data.pt"), list(tensors)
        callback.env = dict(os.environ)
        for name in tensors:
            setattr(loader, name, None)
        try:
            yield
        except ProcessException as exc:
            raise DistributedTrainingError(f"training phase {log_name!r}: a DDP worker failed:\n{exc}") from None
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            if "pickle" not in str(exc):
                raise
            raise ConfigError(
                f"training phase {log_name!r} cannot run in DDP worker processes: {exc}. Everything a phase trains "
                "with (model, loss function) is pickled to the workers; define loss functions and modules at "
                "module level, not as lambdas or closures") from exc
    finally:
        for name, value in tensors.items():
            setattr(loader, name, value)
        callback.loader = callback.spill = callback.env = None
        shutil.rmtree(folder, ignore_errors=True)
        # the launcher pins a free port in the environment; the next phase must pick its own
        if port_before is None:
            os.environ.pop("MASTER_PORT", None)
        else:
            os.environ["MASTER_PORT"] = port_before
    if logger is not None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{log_name}/")}
        if metrics:
            logger.log_metrics(metrics, None)


__all__ = ["DistributedTrainingError", "Parallel", "start_method", "check_trainer_options", "launching", "plan",
           "rank_and_world", "shard", "shard_size"]
