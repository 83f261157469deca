"""Shared test setup: offline, no network, temporary caches, small data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: MNIST / Fashion-MNIST in torchvision's layout (see ../shared/data/README.md)
SHARED_DATA = Path(os.environ.get("STEALBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No W&B traffic, no user cache, no plugin surprises from the developer's environment."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(base / "wandb"))
    monkeypatch.setenv("STEALBENCH_CACHE_DIR", str(base / "cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread (and do not fight other processes for the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def require_shared_data(root: Path) -> Path:
    """`root`, if it holds MNIST and Fashion-MNIST; else skip the test, saying where the data come from. A
    checkout without ../shared/data (a fork, CI) runs every other test instead of erroring on these."""
    missing = [name for name in ("MNIST", "FashionMNIST") if not (root / name / "raw").is_dir()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found under {root} (torchvision's layout, <root>/<name>/raw); "
                    "set STEALBENCH_SHARED_DATA to a folder holding them (see README.md, Test data)")
    return root


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data(SHARED_DATA)


#: options that make a digits run take a few seconds
FAST = ["--victim.epochs", "3", "--attack.rounds", "2", "--attack.epochs_per_round", "2", "--budget", "200",
        "--progress_bar", "false"]
#: FAST without the (JBDA) attack's options, and each attack's own: `--attack.rounds 2 --attack random` is an
#: error (random has no rounds), no longer a silently dropped option
FAST_RUN = ["--victim.epochs", "3", "--budget", "200", "--progress_bar", "false"]
FAST_ATTACK = {"jbda": ["--attack.rounds", "2", "--attack.epochs_per_round", "2"],
               "random": ["--attack.num_checkpoints", "2", "--attack.epochs", "2"]}
