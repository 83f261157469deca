"""stealbench's epoch-gathered batches vs the per-sample default DataLoader, over one MNIST-sized epoch of in-memory tensors.

Usage: python bench/loader_speed.py   (prints the time of each and their ratio, measured side by side)
"""

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from stealbench.training import make_loader

x = torch.rand(60000, 1, 28, 28)
y = torch.softmax(torch.randn(60000, 10), -1)


def epoch(loader) -> float:
    start = time.perf_counter()
    for xb, yb in loader:
        pass
    return time.perf_counter() - start


per_sample = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
batched = make_loader(x, y, batch_size=64, seed=0)
for _ in range(2):  # alternate, so that machine noise hits both
    a, b = epoch(per_sample), epoch(batched)
    print(f"per-sample DataLoader {a:.3f}s  epoch-gathered {b:.3f}s  ratio {a / b:.1f}x")
