"""ModelGuard-W's LP: one block-diagonal sparse LP per chunk of 128 rows (what the defense does) vs one linprog per row.

Usage: python bench/modelguard_lp_speed.py [--rows 512] [--classes 10] [--epsilon 1.0]
Prints both times, their ratio, and the largest difference between the two answers (the same LPs).
"""

import argparse
import time

import numpy as np
import torch

from stealbench.defenses.modelguard import ModelGuardW, modelguard_w_solve

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=512)
parser.add_argument("--classes", type=int, default=10)
parser.add_argument("--epsilon", type=float, default=1.0)
args = parser.parse_args()

g = torch.Generator().manual_seed(0)
y = torch.softmax(torch.randn(args.rows, args.classes, generator=g, dtype=torch.float64) * 4, -1).numpy()
top = y.argmax(1)
for _ in range(2):  # alternate, so that machine noise hits both
    t0 = time.perf_counter()
    per_row = np.concatenate([modelguard_w_solve(y[i:i + 1], top[i:i + 1], args.epsilon) for i in range(len(y))])
    t1 = time.perf_counter()
    batched = ModelGuardW(epsilon=args.epsilon)(None, torch.from_numpy(y)).numpy()
    t2 = time.perf_counter()
    print(f"{args.rows} rows x {args.classes} classes, epsilon {args.epsilon}: per-row linprog {t1 - t0:.3f}s  "
          f"batched {t2 - t1:.3f}s  ratio {(t1 - t0) / (t2 - t1):.1f}x  max |difference| "
          f"{np.abs(per_row - batched).max():.2g}")
