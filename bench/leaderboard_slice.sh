#!/usr/bin/env bash
# The "Leaderboard slice" of bench/RESULTS.md: a 32-run MNIST grid, then the leaderboard.
# Run from the repository root (MNIST in ../shared/data, torchvision layout). Resumable: rerun to continue.
# W&B is disabled here to keep the runs short; drop WANDB_MODE to log every run (offline unless logged in).
set -euo pipefail
cd "$(dirname "$0")/.."
WANDB_MODE=${WANDB_MODE:-disabled} stealbench grid configs/experiments/mnist_slice.yaml
stealbench leaderboard runs/mnist_slice --output_dir bench/leaderboard_slice
