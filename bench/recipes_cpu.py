"""Victim accuracy by training recipe, and the cost of batched augmentation, on a small CPU task.

Fashion-MNIST converted to 32x32 RGB (pools.match_shape, as an attacker pool would be), a class-balanced subset,
resnet20, a few epochs; every row trains from the same initial weights and batch order. Prints one table:

    OMP_NUM_THREADS=1 python bench/recipes_cpu.py --data-root ../shared/data --train 2000 --test 1000 --epochs 3

Rows: `default` (Adam 1e-3, no augmentation), `cifar-sgd` without and with crop+flip (the ratio of their times is
the end-to-end cost of batched augmentation), `cifar-onecycle` with --onecycle. Then, on one batch: a training step
vs its augmentation (timed alternately, robust to a shared CPU), and batched vs a per-image torchvision loop.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from stealbench.augment import BatchAugment
from stealbench.data.base import stratified_split
from stealbench.data.torchvision_sets import FashionMNIST
from stealbench.models import build_net
from stealbench.pools import match_shape
from stealbench.training import TrainSettings, fit, predict_probs

SHAPE = (3, 32, 32)
ROWS = [("default", "none"), ("cifar-sgd", "none"), ("cifar-sgd", "crop-flip")]
ONECYCLE = ("cifar-onecycle", "crop-flip")


def subset(x, y, n, seed):
    keep, _ = stratified_split(y, n / len(y), torch.Generator().manual_seed(seed))
    return match_shape(x[keep], SHAPE), y[keep]


def step_vs_augmentation(arch: str, batch_size: int, repeats: int = 20) -> tuple[float, float]:
    """Median milliseconds of one SGD training step and of the batch's augmentation, timed alternately so that
    load from other processes hits both alike."""
    net = build_net(arch, num_classes=10, input_shape=SHAPE, mean=(0.5,) * 3, std=(0.25,) * 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch_size, *SHAPE), torch.randint(0, 10, (batch_size,))
    augment = BatchAugment("crop-flip", seed=0)
    steps, augs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        augment(x)
        t1 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        t2 = time.perf_counter()
        augs.append(t1 - t0)
        steps.append(t2 - t1)
    return 1e3 * float(torch.tensor(steps).median()), 1e3 * float(torch.tensor(augs).median())


def augmentation_only(batch_size: int, repeats: int = 50) -> tuple[float, float]:
    """Milliseconds per batch: BatchAugment vs torchvision's RandomCrop + flip applied image by image."""
    from torchvision.transforms import v2

    x = torch.rand(batch_size, *SHAPE)
    batched = BatchAugment("crop-flip", seed=0)
    per_image = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    t0 = time.perf_counter()
    for _ in range(repeats):
        batched(x)
    t1 = time.perf_counter()
    for _ in range(repeats):
        torch.stack([per_image(img) for img in x])
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0) / repeats, 1e3 * (t2 - t1) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onecycle", action="store_true", help="add a cifar-onecycle row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = FashionMNIST(root=args.data_root)
    train_x, train_y, test_x, test_y = data.load()
    train_x, train_y = subset(train_x, train_y, args.train, 0)
    test_x, test_y = subset(test_x, test_y, args.test, 1)
    mean = tuple(train_x.mean((0, 2, 3)).tolist())
    std = tuple(train_x.std((0, 2, 3)).tolist())
    targets = F.one_hot(train_y, 10).float()
    print(f"Fashion-MNIST as 32x32 RGB: {len(train_y)} train / {len(test_y)} test images, {args.arch}, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.threads} CPU thread(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch {torch.__version__}")

    results = []
    for recipe, augment in ROWS + ([ONECYCLE] if args.onecycle else []):
        torch.manual_seed(0)  # same initial weights for every row
        net = build_net(args.arch, num_classes=10, input_shape=SHAPE, mean=mean, std=std)
        settings = TrainSettings(batch_size=args.batch_size, recipe=recipe, augment=augment,
                                 trainer={"accelerator": "cpu", "devices": 1})
        t0 = time.perf_counter()
        net = fit(net, train_x, targets, args.epochs, settings, seed=0)
        seconds = time.perf_counter() - t0
        probs = predict_probs(net, test_x, torch.device("cpu"))
        acc = float((probs.argmax(-1) == test_y).float().mean())
        results.append((recipe, augment, seconds, acc))
        print(f"  done: {recipe} / {augment}: {seconds:.1f}s, acc {acc:.4f}", flush=True)

    print()
    print(f"| recipe | augmentation | train time (s) | s/epoch | test acc |")
    print(f"|---|---|---:|---:|---:|")
    for recipe, augment, seconds, acc in results:
        print(f"| {recipe} | {augment} | {seconds:.1f} | {seconds / args.epochs:.1f} | {acc:.4f} |")
    sgd = {augment: seconds for recipe, augment, seconds, _ in results if recipe == "cifar-sgd"}
    print(f"\ncifar-sgd training time, crop+flip / none: {sgd['crop-flip'] / sgd['none']:.3f}x")
    step_ms, aug_ms = step_vs_augmentation(args.arch, args.batch_size)
    print(f"one batch of {args.batch_size}, interleaved medians: training step {step_ms:.1f} ms, batched crop+flip "
          f"{aug_ms:.2f} ms ({100 * aug_ms / step_ms:.1f}% of a step)")
    batched_ms, loop_ms = augmentation_only(args.batch_size)
    print(f"augmentation alone, one batch of {args.batch_size}: batched {batched_ms:.2f} ms, "
          f"per-image torchvision loop {loop_ms:.2f} ms ({loop_ms / batched_ms:.0f}x)")


if __name__ == "__main__":
    main()
