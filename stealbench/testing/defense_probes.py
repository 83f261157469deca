"""check_defense's probes and its checks of the world around a defense: tiny top-2 gaps (rule `argmax`), a world
of few classes (`few-classes`) and hidden state behind declared randomness (`hidden-state`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..defenses.base import Defense
from ..errors import ConfigError
from .world import TinyWorld, _construct, make_defense_setup

#: classes of the few-classes world (fewer than most k-like options: top-k, ensemble members, centroids)
FEW_CLASSES = 2
#: repeats of one batch in the hidden-state stream; the first and last HIDDEN_WINDOW are compared
HIDDEN_REPEATS = 40
HIDDEN_WINDOW = 12
#: how many standard errors of the early-late difference count as drift (see _drift)
HIDDEN_Z = 8.0


def simplex_problem(released: Any, probs: Tensor) -> tuple[str, str] | None:
    """(rule, detail) when `released` is not a valid answer to `probs`: type, shape, dtype, device, simplex."""
    if not isinstance(released, Tensor):
        return "shape-dtype-device", f"returned {type(released).__name__}, not a torch.Tensor"
    if released.shape != probs.shape:
        return "shape-dtype-device", f"returned shape {tuple(released.shape)}, expected {tuple(probs.shape)}"
    if released.dtype != probs.dtype:
        return "shape-dtype-device", f"returned dtype {released.dtype} for {probs.dtype} input"
    if released.device != probs.device:
        return "shape-dtype-device", f"returned a tensor on {released.device} for input on {probs.device}"
    if not torch.isfinite(released).all():
        return "simplex", "returned NaN or infinite values"
    if (released < -1e-6).any():
        return "simplex", f"returned negative probabilities (min {released.min().item():.3g})"
    worst = (released.double().sum(-1) - 1).abs().max().item()
    if worst > 1e-4:
        return "simplex", f"returned rows that do not sum to 1 (off by up to {worst:.3g})"
    return None


def tiny_gap_batches(world: TinyWorld, n: int = 24) -> list[tuple[Tensor, Tensor]]:
    """(x, probs) batches, each in its own dtype, whose top-2 gap is tiny: 1e-5 and 1e-6 in float32, 1e-9 in
    float64. Noise of 1e-4 on an answer flips about half of their top-1 classes."""
    x = world.images(n, world.seed + 6).to(world.device)
    g = torch.Generator().manual_seed(world.seed + 6)
    logits = torch.randn(n, world.num_classes, generator=g, dtype=torch.float64)
    batches = []
    for gap, dtype in ((1e-5, torch.float32), (1e-6, torch.float32), (1e-9, torch.float64)):
        p = torch.softmax(logits, -1)
        top2 = p.topk(2, dim=-1)
        p = p.scatter(1, top2.indices[:, 1:], top2.values[:, :1] - gap)
        p = (p / p.sum(-1, keepdim=True)).to(dtype)
        batches.append((x, p.to(world.device)))
    return batches


def _few_class_batches(world: TinyWorld, victim: nn.Module) -> list[tuple[Tensor, Tensor]]:
    x = world.images(16, world.seed + 3).to(world.device)
    with torch.no_grad():
        victim_probs = torch.softmax(victim(x), -1)
    k = world.num_classes
    one_hot = torch.nn.functional.one_hot(torch.arange(16, device=world.device) % k, k).float()
    near = torch.full((16, k), 1.0 / k, device=world.device)
    near[:, 0] += 1e-3
    near = near / near.sum(-1, keepdim=True)
    return [(x, victim_probs), (x, one_hot), (x, near)]


def check_few_classes(factory: Any, kwargs: dict[str, Any], seed: int, world: TinyWorld,
                      fail: Callable[[str, str], None]) -> None:
    """The defense, built with the same options, in a copy of `world` with FEW_CLASSES classes: a ConfigError at
    construction or setup is a clear refusal and passes; any other error, or an invalid answer, fails."""
    if world.num_classes <= FEW_CLASSES:
        return  # the main check ran in such a world already
    few = dataclasses.replace(world, num_classes=FEW_CLASSES, n_train=min(world.n_train, 64))  # setup: fast
    where = f"in a world of {FEW_CLASSES} classes"
    try:
        torch.manual_seed(seed)
        defense = _construct(factory, Defense, kwargs)
        defense.setup(make_defense_setup(few))
        defense = defense.to(few.device).eval()
    except ConfigError:
        return  # refused clearly, before any query
    except Exception as exc:
        fail("few-classes", f"{where}, construction or setup() raised {type(exc).__name__}: {exc} (refuse "
                            "settings that do not fit with a ConfigError)")
        return
    try:
        torch.manual_seed(seed + 1)
        for x, probs in _few_class_batches(few, few.victim()):
            for dtype in (torch.float32, torch.float64):
                p = probs.to(dtype)
                with torch.no_grad():
                    released = defense(x, p)
                problem = simplex_problem(released, p)
                if problem:
                    fail("few-classes", f"{where}, {problem[1]} [{problem[0]}]")
                    return
                if defense.preserves_argmax and (released.argmax(-1) != p.argmax(-1)).any():
                    fail("few-classes", f"{where}, declares preserves_argmax=True but changed a top-1 class")
                    return
    except Exception as exc:
        fail("few-classes", f"{where}, forward raised {type(exc).__name__}: {exc} (refuse settings that do not "
                            "fit with a ConfigError at setup)")


def _drift(stats: Tensor) -> tuple[float, float, int] | None:
    """(largest early-late difference in standard errors, that difference, its column) over the columns of
    `stats` (one row per repeat), or None.

    Each column is a per-repeat statistic; for a defense whose answers to the same batch are independent draws
    from one distribution, its early and late windows' means differ by noise of standard error
    sqrt(var_early / n + var_late / n), estimated from the windows themselves. HIDDEN_Z = 8 standard errors:
    with windows of 12 the t statistic has about 22 degrees of freedom, and |t| > 8 has probability below 1e-7
    per column. A floor of 1e-6 (float32 resolution of probabilities) keeps a deterministic column from failing
    on rounding.
    """
    early, late = stats[:HIDDEN_WINDOW], stats[-HIDDEN_WINDOW:]
    diff = (late.mean(0) - early.mean(0)).abs()
    se = (early.var(0) / len(early) + late.var(0) / len(late)).sqrt()
    tolerance = torch.maximum(HIDDEN_Z * se, torch.full_like(se, 1e-6))
    over = diff / tolerance
    col = int(over.argmax())
    return (float(diff[col] / se[col].clamp_min(1e-12)), float(diff[col]), col) if over[col] > 1 else None


def check_hidden_state(build: Callable[[], Defense], x: Tensor, probs: Tensor, seed: int,
                       fail: Callable[[str, str], None]) -> None:
    """A randomised, not stateful defense answers `probs` HIDDEN_REPEATS times in a stream, each answer a fresh
    draw; the statistics (mean L1 distance to the clean answer, the mean released vector) must not drift from
    the first repeats to the last."""
    try:
        defense = build()
        torch.manual_seed(seed + 3)
        rows = []
        with torch.no_grad():
            for _ in range(HIDDEN_REPEATS):
                released = defense(x, probs).double()
                l1 = (released - probs.double()).abs().sum(-1).mean()
                rows.append(torch.cat([l1.view(1), released.mean(0)]))
        drift = _drift(torch.stack(rows).cpu())
    except Exception as exc:
        fail("hidden-state", f"{type(exc).__name__}: {exc}")
        return
    if drift is not None:
        z, diff, col = drift
        what = "the mean L1 distance to the clean answer" if col == 0 else f"the mean released p[{col - 1}]"
        fail("hidden-state", f"answered the same batch differently late in a stream of {HIDDEN_REPEATS} repeats: "
                             f"{what} moved by {diff:.3g} ({z:.1f} standard errors); if the defense depends on "
                             "the query history, set stateful = True")
