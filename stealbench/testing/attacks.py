"""check_attack, check_architecture, check_dataset."""

from __future__ import annotations

import pickle
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..errors import BudgetExceededError
from .world import ConformanceError, TinyWorld, _construct, _dedupe, _resolve, _Watch, make_attack_context

# ----------------------------------------------------------------------------------------------------------------
# Attacks
# ----------------------------------------------------------------------------------------------------------------

def check_attack(target: Any, *, kwargs: dict[str, Any] | None = None, budget: int = 150,
                 world: TinyWorld | None = None, seed: int = 0) -> None:
    """Check an attack against :data:`ATTACK_RULES`; raise :class:`ConformanceError` listing what it breaks.

    The attack runs twice, each time against an instrumented tiny victim behind an oracle with ``budget``
    queries: every victim forward must happen inside ``oracle.query`` and the budget must never be exceeded.
    Training epochs are capped at ``world.max_epochs`` to keep it fast.
    """
    world = world or TinyWorld(seed=seed)
    factory, who = _resolve("attacks", target, Attack)
    kwargs = dict(kwargs or {})
    failures: list[tuple[str, str]] = []

    def run_once() -> tuple[list[tuple[int, float]], list[int]] | None:
        torch.manual_seed(seed)
        try:
            attack = _construct(factory, Attack, kwargs)
        except Exception as exc:
            failures.append(("interface", f"{type(exc).__name__}: {exc}"))
            return None
        try:
            pickle.loads(pickle.dumps(attack))
        except Exception as exc:
            failures.append(("sendable", f"cannot be pickled ({type(exc).__name__}: {exc}); keep the attack's "
                                         "state in plain attributes (no lambdas, open files or local classes)"))
            return None
        points: list[int] = []
        ctx = make_attack_context(budget, world, checkpoint=lambda model, r, fresh: points.append(ctx.oracle.used))
        watch: _Watch = ctx.oracle._conformance_watch
        pool_before = ctx.pool_x.clone()
        completed = False
        try:
            attack.validate(budget=budget, num_classes=world.num_classes, pool_size=len(ctx.pool_x))
            model = attack.run(ctx)
            completed = True
        except BudgetExceededError:
            pass  # reported from the watch below
        except Exception as exc:
            failures.append(("run", f"{type(exc).__name__}: {exc}"))
        if watch.over_budget:
            failures.append(("budget", watch.over_budget[0]))
        if ctx.oracle.used > budget:
            failures.append(("budget", f"used {ctx.oracle.used} queries of a budget of {budget}"))
        if watch.direct_calls:
            failures.append(("oracle-only", f"called the victim {watch.direct_calls} time(s) outside oracle.query"))
        elif watch.images_seen != ctx.oracle.used:
            failures.append(("oracle-only", f"the victim saw {watch.images_seen} images but the oracle counted "
                                            f"{ctx.oracle.used}"))
        if not torch.equal(ctx.pool_x, pool_before):
            failures.append(("pool-unchanged", "modified ctx.pool_x in place"))
        if not completed:
            return None
        if not isinstance(model, nn.Module):
            failures.append(("run", f"run() returned {type(model).__name__}, not an nn.Module"))
        if not points:
            failures.append(("checkpoint", "never called ctx.checkpoint, so the surrogate is never evaluated"))
        elif points != sorted(points):
            failures.append(("checkpoint", f"checkpoints at decreasing query counts {points}"))
        return list(ctx.oracle.log), points

    first = run_once()
    if first is not None and not failures:
        second = run_once()
        if second is not None and second != first:
            failures.append(("seeded-repeat", "two runs under the same seed sent different queries "
                                              f"({len(first[0])} vs {len(second[0])} oracle calls)"))
    if failures:
        raise ConformanceError(who, _dedupe(failures))


# ----------------------------------------------------------------------------------------------------------------
# Whole plugins, architectures
# ----------------------------------------------------------------------------------------------------------------

def check_architecture(target: Any, *, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
    """An architecture factory returns an nn.Module mapping (B, C, H, W) images to (B, num_classes) logits."""
    factory, who = _resolve("architectures", target, object)
    try:
        net = factory(num_classes, input_shape[0], input_shape[1])
        out = net(torch.rand(2, *input_shape))
        if tuple(out.shape) != (2, num_classes):
            raise ConformanceError(who, [("logits", f"returned logits shaped {tuple(out.shape)}, "
                                                    f"expected (2, {num_classes})")])
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(who, [("logits", f"{type(exc).__name__}: {exc}")]) from exc


def check_dataset(target: Any, *, kwargs: dict[str, Any] | None = None) -> None:
    """A data set loads float32 images in [0, 1] shaped like ``input_shape``, labels in range, non-empty splits."""
    from ..data.base import ImageDataset

    factory, who = _resolve("datasets", target, ImageDataset)
    failures: list[tuple[str, str]] = []
    try:
        data = _construct(factory, ImageDataset, dict(kwargs or {}))
        c = data.input_shape[0]
        if len(data.mean) != c or len(data.std) != c:
            failures.append(("dataset-format", f"mean/std have {len(data.mean)}/{len(data.std)} entries for {c} "
                                               "channels"))
        splits = data.splits()
    except Exception as exc:
        raise ConformanceError(who, [("dataset-load", f"{type(exc).__name__}: {exc}")]) from exc
    for part in ("victim", "pool", "eval"):
        x, y = getattr(splits, f"{part}_x"), getattr(splits, f"{part}_y")
        if len(y) == 0 or len(x) != len(y):
            failures.append(("dataset-splits", f"the {part} split has {len(x)} images and {len(y)} labels"))
            continue
        if x.dtype != torch.float32 or tuple(x.shape[1:]) != tuple(data.input_shape):
            failures.append(("dataset-format", f"{part} images are {x.dtype} {tuple(x.shape)}, expected float32 "
                                               f"(N, {', '.join(map(str, data.input_shape))})"))
        elif x.min() < 0 or x.max() > 1:
            failures.append(("dataset-format", f"{part} images lie in [{x.min().item():.3g}, {x.max().item():.3g}], "
                                               "expected pixel space [0, 1]"))
        if y.dtype != torch.int64 or y.min() < 0 or y.max() >= data.num_classes:
            failures.append(("dataset-format", f"{part} labels must be int64 in [0, {data.num_classes})"))
    if failures:
        raise ConformanceError(who, _dedupe(failures))


