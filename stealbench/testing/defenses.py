"""check_defense: a defense against DEFENSE_RULES, run the way a run runs it."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..defender.guard import checked_report, weights_checksum
from ..defenses.base import Defense
from ..errors import DefenseOutputError
from .defense_probes import check_few_classes, check_hidden_state, simplex_problem, tiny_gap_batches
from .world import ConformanceError, TinyWorld, _construct, _dedupe, _resolve, make_defense_setup

# ----------------------------------------------------------------------------------------------------------------
# Defenses
# ----------------------------------------------------------------------------------------------------------------

#: figures the framework measures for every defense (defense/*, victim/*): a report that names them is a forgery
_MEASURED = {"top1_changed", "kl_nats", "kl_nats_rev", "l1", "acc", "acc_defended", "defense/top1_changed",
             "defense/kl_nats", "defense/kl_nats_rev", "defense/l1", "victim/acc", "victim/acc_defended"}


def _probe_batches(world: TinyWorld, victim: nn.Module, n: int = 24) -> list[tuple[Tensor, Tensor]]:
    """(x, probs) batches: the victim's own answers, plus peaked, exactly one-hot, uniform and near-tie rows."""
    x = world.images(n, world.seed + 3).to(world.device)
    with torch.no_grad():
        victim_probs = torch.softmax(victim(x), -1)
    k = world.num_classes
    g = torch.Generator().manual_seed(world.seed + 4)
    logits = torch.randn(n, k, generator=g).to(world.device)
    peaked = torch.softmax(logits * 8, -1)
    one_hot = torch.nn.functional.one_hot(torch.arange(n, device=world.device) % k, k).float()
    uniform = torch.full((n, k), 1.0 / k, device=world.device)
    uniform[:, 0] += 1e-3  # a defined argmax
    uniform = uniform / uniform.sum(-1, keepdim=True)
    near_tie = torch.softmax(logits, -1)
    top2 = near_tie.topk(2, dim=-1)
    near_tie = near_tie.scatter(1, top2.indices[:, 1:], top2.values[:, :1] - 2e-3)
    near_tie = near_tie / near_tie.sum(-1, keepdim=True)
    return [(x, victim_probs), (x, peaked), (x, one_hot), (x, uniform), (x, near_tie)]


def check_defense(target: Any, *, kwargs: dict[str, Any] | None = None, world: TinyWorld | None = None,
                  seed: int = 0) -> None:
    """Check a defense against :data:`DEFENSE_RULES`; raise :class:`ConformanceError` listing what it breaks.

    Args:
        target: a registry key (``"mad"``), a :class:`~stealbench.defenses.Defense` subclass, or a factory.
        kwargs: constructor arguments (default: the class defaults, as on the command line).
        world: the tiny world to run in (default: 10 classes of random 8x8 images on the CPU).
        seed: seeds torch before each construction + setup.
    """
    world = world or TinyWorld(seed=seed)
    factory, who = _resolve("defenses", target, Defense)
    kwargs = dict(kwargs or {})
    failures: list[tuple[str, str]] = []

    def fail(rule: str, detail: str) -> None:
        failures.append((rule, detail))

    def build() -> Defense:
        torch.manual_seed(seed)
        defense = _construct(factory, Defense, kwargs)
        defense.setup(make_defense_setup(world))
        return defense.to(world.device).eval()

    try:
        torch.manual_seed(seed)
        defense = _construct(factory, Defense, kwargs)
    except Exception as exc:
        raise ConformanceError(who, [("interface", f"{type(exc).__name__}: {exc}")]) from exc
    setup_victim = world.victim()
    before = weights_checksum(setup_victim)
    try:
        torch.manual_seed(seed)
        defense.setup(make_defense_setup(world, victim=setup_victim))
        defense = defense.to(world.device).eval()
    except Exception as exc:
        raise ConformanceError(who, [("setup", f"{type(exc).__name__}: {exc}")]) from exc
    if weights_checksum(setup_victim) != before:  # a run stops here too (rule victim-unchanged)
        fail("victim-unchanged", "setup() changed the weights of the victim it was given; train a copy instead")

    victim = world.victim()
    batches = _probe_batches(world, victim)

    def answer(d: Defense, x: Tensor, probs: Tensor) -> Tensor:
        with torch.no_grad():
            return d(x, probs)

    def answers(d: Defense) -> list[Tensor]:
        torch.manual_seed(seed + 1)
        return [answer(d, x, p) for x, p in batches]

    # simplex, shape, dtype, device, inputs unchanged, argmax -- on a fresh instance; the probes in float32 and
    # float64, then rows whose top-2 gap is tiny, each in its own dtype (a false argmax claim under tiny noise)
    try:
        torch.manual_seed(seed + 1)
        probes = [(x, p.to(dtype)) for dtype in (torch.float32, torch.float64) for x, p in batches]
        for x, probs in probes + tiny_gap_batches(world):
            x_before, p_before = x.clone(), probs.clone()
            released = answer(defense, x, probs)
            if not torch.equal(x, x_before) or not torch.equal(probs, p_before):
                fail("inputs-unchanged", "modified x or probs in place")
            problem = simplex_problem(released, probs)
            if problem:
                fail(*problem)
                continue
            if defense.preserves_argmax:
                changed = (released.argmax(-1) != probs.argmax(-1)).sum().item()
                if changed:
                    gap = probs.topk(2, -1).values.diff(dim=-1).abs().min().item()
                    fail("argmax", f"declares preserves_argmax=True but changed the top-1 class of {changed} "
                                   f"of {len(probs)} {probs.dtype} rows (smallest top-2 gap {gap:.2g})")
    except Exception as exc:
        fail("simplex", f"forward raised {type(exc).__name__}: {exc}")
    if failures:
        raise ConformanceError(who, _dedupe(failures))

    # the same inputs again, through a fresh instance built under the same seed
    try:
        again = answers(build())
        first_again = answers(build())
        if not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(again, first_again)):
            fail("seeded-repeat", "two instances built under the same seed answered the same queries differently")
    except Exception as exc:
        fail("seeded-repeat", f"{type(exc).__name__}: {exc}")

    if defense.stateful:
        try:
            fresh = build()
            before = answers(fresh)
            fresh.reset()
            after = answers(fresh)
            if not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after)):
                fail("reset", "answered differently after reset() than a fresh instance did")
        except Exception as exc:
            fail("reset", f"{type(exc).__name__}: {exc}")
    elif defense.randomized:  # no batch-consistency to hold it to: its answers must not drift with the stream
        check_hidden_state(build, *batches[0], seed, fail)
    else:
        try:
            d = build()
            for x, probs in batches[:3]:
                whole = answer(d, x, probs)
                single = torch.cat([answer(d, x[i:i + 1], probs[i:i + 1]) for i in range(len(x))])
                if not torch.allclose(whole, single, atol=1e-5):
                    worst = (whole - single).abs().max().item()
                    fail("batch-consistency", f"answered a batch differently from the same queries one by one "
                                              f"(max difference {worst:.3g}); if the defense depends on the "
                                              "query history, set stateful = True")
                    break
        except Exception as exc:
            fail("batch-consistency", f"{type(exc).__name__}: {exc}")

    # benign users and attackers alike: a copy of the instance (how the evaluation used to be answered) in the
    # same state, under the same seed, answers as the instance does
    try:
        d = build()
        answer(d, *batches[0])  # some history first: a stateful defense is copied mid-run
        twin = copy.deepcopy(d)
        for x, probs in batches[1:3]:
            torch.manual_seed(seed + 2)
            mine = answer(twin, x, probs)
            torch.manual_seed(seed + 2)
            theirs = answer(d, x, probs)
            if not torch.allclose(mine, theirs, atol=1e-6):
                fail("benign-alike", "a copy of the instance, in the same state and under the same seed, answered "
                                     "differently: a defense must not tell benign users' traffic from the attacker's")
                break
    except Exception as exc:
        fail("benign-alike", f"{type(exc).__name__}: {exc}")

    try:  # as a run reads it (defense/report/<key>): finite numbers, and no name of a figure the framework measures
        checked_report(defense, who)
        claimed = sorted(set(defense.report()) & _MEASURED)
        if claimed:
            fail("report", f"report() claims {', '.join(claimed)}, which the framework measures itself")
    except DefenseOutputError as exc:
        fail("report", str(exc).split(": it ", 1)[-1])

    check_few_classes(factory, kwargs, seed, world, fail)  # the same options among fewer classes than their k

    if failures:
        raise ConformanceError(who, _dedupe(failures))


