"""check_attack, check_architecture, check_dataset."""

from __future__ import annotations

import numbers
import pickle
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks.base import Attack, AttackContext
from ..errors import BudgetExceededError
from .world import ConformanceError, TinyWorld, _construct, _dedupe, _resolve, _Watch, make_attack_context

# ----------------------------------------------------------------------------------------------------------------
# Attacks
# ----------------------------------------------------------------------------------------------------------------

def check_attack(target: Any, *, kwargs: dict[str, Any] | None = None, budget: int = 150,
                 world: TinyWorld | None = None, seed: int = 0) -> None:
    """Check an attack against :data:`ATTACK_RULES`; raise :class:`ConformanceError` listing what it breaks.

    The attack runs twice under the soft label mode, then once under the hard one (:data:`LABEL_MODES`), each
    time against an instrumented tiny victim behind an oracle with ``budget`` queries: every victim forward must
    happen inside ``oracle.query``, the budget must never be exceeded, every target it trains on must come from
    ``ctx.to_targets`` and every model it checkpoints must be the surrogate architecture. Training epochs are
    capped at ``world.max_epochs`` to keep it fast.
    """
    world = world or TinyWorld(seed=seed)
    factory, who = _resolve("attacks", target, Attack)
    kwargs = dict(kwargs or {})
    failures: list[tuple[str, str]] = []
    scratch = world.new_net()  # the surrogate architecture, built before any seeding: checkpoints load into it

    def run_once(mode: str) -> tuple[list[tuple[int, float]], list[int]] | None:
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
        rounds: list[Any] = []

        def checkpoint(model: nn.Module, round_idx: int, fresh: bool) -> None:
            points.append(ctx.oracle.used)
            rounds.append(round_idx)
            problem = _not_the_surrogate(model, scratch, "ctx.checkpoint")
            if problem:
                failures.append(("surrogate", problem))

        ctx = make_attack_context(budget, world, checkpoint=checkpoint, label_mode=mode)
        made, trained = _record_targets(ctx)
        seed_labels: list[int] = []
        seed_set = ctx.seed_set

        def recording_seed_set(per_class: int) -> tuple[Tensor, Tensor]:
            seed_labels.append(per_class)
            return seed_set(per_class)

        ctx.seed_set = recording_seed_set if seed_set is not None else None
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
        if seed_labels:  # the labelled seed set is the attacker's own knowledge: its one-hot labels are targets too
            made.append(torch.eye(world.num_classes))
        problem = _label_mode_problem(mode, made, trained, ctx.oracle.used, world.num_classes)
        if problem:
            failures.append(("label-mode", problem))
        problem = _rounds_problem(rounds)
        if problem:
            failures.append(("rounds", problem))
        if not completed:
            return None
        if not isinstance(model, nn.Module):
            failures.append(("run", f"run() returned {type(model).__name__}, not an nn.Module"))
        else:
            problem = _not_the_surrogate(model, scratch, "run() returned a model that")
            if problem:
                failures.append(("surrogate", problem))
        if not points:
            failures.append(("checkpoint", "never called ctx.checkpoint, so the surrogate is never evaluated"))
        elif points != sorted(points):
            failures.append(("checkpoint", f"checkpoints at decreasing query counts {points}"))
        return list(ctx.oracle.log), points

    first = run_once(LABEL_MODES[0])
    if first is not None and not failures:
        second = run_once(LABEL_MODES[0])
        if second is not None and second != first:
            failures.append(("seeded-repeat", "two runs under the same seed sent different queries "
                                              f"({len(first[0])} vs {len(second[0])} oracle calls)"))
    for mode in LABEL_MODES[1:]:
        if not failures:
            run_once(mode)
    if failures:
        raise ConformanceError(who, _dedupe(failures))


#: the label modes check_attack runs an attack under: the first twice (seeded-repeat), each other once
LABEL_MODES = ("soft", "hard")


def _record_targets(ctx: AttackContext) -> tuple[list[Tensor], list[Tensor]]:
    """Wrap ctx.to_targets and ctx.train: (what to_targets returned, the targets ctx.train was given)."""
    made: list[Tensor] = []
    trained: list[Tensor] = []
    to_targets, train = ctx.to_targets, ctx.train

    def recording_to_targets(answers: Tensor) -> Tensor:
        out = to_targets(answers)
        made.append(out.detach())
        return out

    def recording_train(model: nn.Module, x: Tensor, targets: Tensor, epochs: int, *args: Any, **options: Any):
        trained.append(targets.detach() if isinstance(targets, Tensor) else targets)
        return train(model, x, targets, epochs, *args, **options)

    ctx.to_targets, ctx.train = recording_to_targets, recording_train
    return made, trained


def _label_mode_problem(mode: str, made: list[Tensor], trained: list[Any], queried: int, k: int) -> str | None:
    """Every row of every target tensor given to ctx.train is a row ctx.to_targets returned (to 1e-4)."""
    hint = f"under the {mode!r} label mode; train on ctx.to_targets(answers), not on the answers themselves"
    if queried and not made:
        return f"queried the oracle {queried} time(s) but never called ctx.to_targets {hint}"
    rows = []
    for targets in trained:
        if not isinstance(targets, Tensor) or targets.dim() < 1 or targets.shape[-1] != k:
            shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            return f"passed ctx.train targets shaped {shape}, not (N, {k}) probability vectors {hint}"
        rows.append(targets.reshape(-1, k).detach().double().cpu())
    if not rows or not sum(len(r) for r in rows):
        return None
    given = torch.cat(rows).unique(dim=0)
    known = torch.cat([m.reshape(-1, k).detach().double().cpu() for m in made]).unique(dim=0) if made else None
    if known is None:
        return f"passed ctx.train targets that ctx.to_targets never returned {hint}"
    nearest = torch.cdist(given, known, p=float("inf")).min(1).values if len(known) else torch.ones(len(given))
    stray = int((nearest > 1e-4).sum())
    if stray:
        return f"passed ctx.train {stray} distinct target row(s) that ctx.to_targets did not return {hint}"
    return None


def _rounds_problem(rounds: list[Any]) -> str | None:
    """ctx.checkpoint's round numbers: integers counting from 1, strictly increasing."""
    for r in rounds:
        if not isinstance(r, numbers.Integral) or isinstance(r, bool):
            return f"ctx.checkpoint got round {r!r}, not an integer"
    if rounds and rounds[0] != 1:
        return f"the first ctx.checkpoint is round {rounds[0]}; rounds count from 1"
    back = [(a, b) for a, b in zip(rounds, rounds[1:]) if b <= a]
    if back:
        return f"ctx.checkpoint round {back[0][1]} follows round {back[0][0]}; rounds must increase strictly"
    return None


def _not_the_surrogate(model: Any, scratch: nn.Module, what: str) -> str | None:
    """The run's refusal (the evaluator loads the weights strictly into the surrogate architecture), or None."""
    from ..evaluator.client import not_the_surrogate
    from ..evaluator.process import WEIGHTS_DO_NOT_FIT, load_weights

    if not isinstance(model, nn.Module):
        return f"{what} got a {type(model).__name__}, not an nn.Module built by ctx.new_surrogate()"
    try:
        load_weights(scratch, dict(model.state_dict()))
    except WEIGHTS_DO_NOT_FIT as exc:
        message = str(not_the_surrogate(str(exc).strip().splitlines()[0]))
        return message if what == "ctx.checkpoint" else message.replace("ctx.checkpoint got a model that", what)
    return None


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


