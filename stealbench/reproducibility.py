"""What, besides the seed, decides a run's numbers: the machine, each process's thread counts and numeric modes.

The same command and seed give identical metrics on one machine with the same settings (tests/test_reproducible.py).
Another processor, GPU, thread count or deterministic setting may change them: float sums reduce in another order,
and a surrogate trained on a transfer set that an attack chose from slightly different gradients drifts further.
results.json's ``reproducibility`` record (and the W&B config's) says which of these a run had, per process: the
defender's (this one) and the attacker's (its own, ``stealbench.attacker``).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

#: environment variables that set thread pools or numeric modes of the libraries under torch
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def process_record() -> dict[str, Any]:
    """This process's settings that change float results: torch's thread pools and deterministic modes."""
    cudnn = torch.backends.cudnn
    return {
        "torch_threads": torch.get_num_threads(),  # intra-op
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {name: os.environ.get(name) for name in THREAD_ENV},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(cudnn.deterministic),
        "cudnn_benchmark": bool(cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_record() -> dict[str, Any]:
    """The hardware and the native libraries: CPU, usable cores, GPUs, CUDA and cuDNN versions."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "gpus": gpus,
        "cuda": torch.version.cuda,  # the CUDA torch was built with (set on CPU-only machines too)
        "cudnn": cudnn,
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }


def run_record(trainer: dict[str, Any], device: torch.device | str, defender: dict[str, Any],
               attacker: dict[str, Any] | None) -> dict[str, Any]:
    """The record results.json and the W&B config carry under ``reproducibility``.

    `trainer`: the --trainer options (Lightning's `deterministic` and `benchmark`; None: not set, Lightning leaves
    torch's defaults); `defender` / `attacker`: each process's `process_record()`, taken when its work has ended.
    """
    return {
        "trainer": {"deterministic": trainer.get("deterministic"), "benchmark": trainer.get("benchmark")},
        "device": str(device),
        "machine": machine_record(),
        "defender": defender,
        "attacker": attacker,
    }


def thread_counts() -> tuple[int, int]:
    """(intra-op, inter-op) torch threads of this process: what the attacker's process is given."""
    return torch.get_num_threads(), torch.get_num_interop_threads()


def apply_thread_counts(counts: tuple[int, int] | None) -> None:
    """Give this process the defender's torch thread counts.

    The attacker's process is forked from a server whose thread pools were sized when the server started (by its
    OMP_NUM_THREADS then, not by the main process's `torch.set_num_threads` since), so without this both sides
    could train with different thread counts. The inter-op pool can be sized only before its first use; where it
    was already used the record shows the count it kept.
    """
    if counts is None:
        return
    intra, interop = counts
    if torch.get_num_threads() != intra:
        torch.set_num_threads(intra)
    if torch.get_num_interop_threads() != interop:
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:
            pass  # already started: results.json's attacker record shows what it runs with


__all__ = ["THREAD_ENV", "apply_thread_counts", "machine_record", "process_record", "processor_name", "run_record",
           "thread_counts"]
