"""Conformance kit for defenses and attacks, built-in or third-party (public API).

Plain check functions, in the spirit of scikit-learn's ``check_estimator``::

    from stealbench.testing import check_defense, check_attack, check_plugin

    check_defense("mad")              # a registry key, a Defense subclass, or a zero-argument factory
    check_attack("jbda", budget=150)
    check_plugin("mad")               # everything the plugin `mad` registered

Each raises :class:`ConformanceError` (an ``AssertionError``) listing every broken rule, naming the component,
the plugin (and distribution) that registered it, and the rule. The rules are in :data:`DEFENSE_RULES` and
:data:`ATTACK_RULES`.

Opt-in pytest plugin, like pytest's ``pytester``: add ``pytest_plugins = ["stealbench.testing"]`` to a
``conftest.py`` to get the fixtures ``stealbench_catalog`` (a freshly loaded catalogue),
``stealbench_distribution`` (install a throwaway plugin distribution for one test), ``defense_setup`` and
``attack_context`` (the tiny, digits-sized worlds the checks run in).

Everything runs on tiny random 8x8 images with a tiny victim, in well under a second per component on a CPU.
"""

from __future__ import annotations

import inspect
import pickle
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .attacks.base import Attack, AttackContext
from .defenses.base import Defense, DefenseSetup
from .errors import BudgetExceededError, StealbenchError

__all__ = [
    "ATTACK_RULES",
    "DEFENSE_RULES",
    "REPRODUCTION_RULES",
    "ConformanceError",
    "TinyWorld",
    "check_architecture",
    "check_attack",
    "check_dataset",
    "check_defense",
    "check_plugin",
    "check_reproduction",
    "make_attack_context",
    "make_defense_setup",
    "write_distribution",
]

#: rule id -> what a defense must do
DEFENSE_RULES: dict[str, str] = {
    "interface": "is a subclass of stealbench.defenses.Defense whose defaults construct it",
    "setup": "setup(DefenseSetup) runs without error",
    "simplex": "releases probability vectors: finite, >= 0, rows summing to 1",
    "shape-dtype-device": "returns a tensor with the input probabilities' shape, dtype and device",
    "inputs-unchanged": "does not modify x or probs in place",
    "batch-consistency": "a stateless, non-randomised defense answers a batch as it answers each query alone",
    "seeded-repeat": "two instances built and set up under the same seed give the same answers",
    "reset": "a stateful defense answers the same again after reset()",
    "argmax": "a defense with preserves_argmax=True never changes the victim's top-1 class",
    "report": "report() returns a dict of str -> number",
}

#: rule id -> what an attack must do
ATTACK_RULES: dict[str, str] = {
    "interface": "is a subclass of stealbench.attacks.Attack whose defaults construct it",
    "sendable": "survives pickling (a run sends the attack to the attacker's own process)",
    "run": "run(ctx) finishes without error and returns an nn.Module surrogate",
    "budget": "never asks the oracle for more images than oracle.remaining",
    "oracle-only": "every victim evaluation goes through oracle.query (the victim is never touched directly)",
    "pool-unchanged": "does not modify the attacker pool in place",
    "checkpoint": "calls ctx.checkpoint at least once, at query counts that never decrease",
    "seeded-repeat": "two runs under the same seed send the same queries",
}


class ConformanceError(AssertionError):
    """A component broke one or more conformance rules; the message names the component, plugin and rules."""

    def __init__(self, who: str, failures: list[tuple[str, str]]) -> None:
        self.who = who
        self.failures = failures
        lines = [f"{who} breaks {len(failures)} conformance rule{'s' if len(failures) != 1 else ''}:"]
        lines += [f"  [{rule}] {detail}" for rule, detail in failures]
        super().__init__("\n".join(lines))

    @property
    def rules(self) -> list[str]:
        return [rule for rule, _ in self.failures]

#: rule id -> what a registered reproduction file must be (checked without running anything)
REPRODUCTION_RULES: dict[str, str] = {
    "reproduction-file": "the file (and its <stem>_quick.yaml, if any) parses as a grid with a `claims:` section",
    "reproduction-keys": "every data set, defense and attack it names is registered; the utility defense takes "
                         "each swept setting",
    "reproduction-select": "every check selects on fields its records have (a misspelt field reads `no data`)",
}


# ----------------------------------------------------------------------------------------------------------------
# The tiny world the checks run in
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class TinyWorld:
    """Digits-sized stand-ins: random 8x8 grey images, a tiny victim, fast plain-PyTorch training."""

    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 8, 8)
    n_train: int = 200
    n_pool: int = 300
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    max_epochs: int = 1  # training is capped: the checks test behaviour, not accuracy

    def images(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, *self.input_shape, generator=g)

    def labels(self, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed + 1)
        return torch.arange(n)[torch.randperm(n, generator=g)] % self.num_classes

    def new_net(self, seed: int | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        c, h, w = self.input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, self.num_classes))

    def victim(self) -> nn.Module:
        net = self.new_net(self.seed + 12345).to(self.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def train(self, net: nn.Module, x: Tensor, targets: Tensor, epochs: int, *_: Any, **__: Any) -> nn.Module:
        """Soft-target cross-entropy with Adam; deterministic given the global seed."""
        net = net.to(self.device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(int(x.numel()) + self.seed)
        for _ in range(max(1, min(int(epochs), self.max_epochs))):
            for idx in torch.randperm(len(x), generator=g).split(64):
                logits = net(x[idx].to(self.device))
                loss = -(targets[idx].to(self.device) * torch.log_softmax(logits, -1)).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return net.eval()


def make_defense_setup(world: TinyWorld | None = None, victim: nn.Module | None = None) -> DefenseSetup:
    """A DefenseSetup over the tiny world (what ``Defense.setup`` receives in the checks)."""
    world = world or TinyWorld()
    victim = victim if victim is not None else world.victim()
    train_x = world.images(world.n_train, world.seed + 1)
    return DefenseSetup(
        victim=victim, train_x=train_x, train_y=world.labels(world.n_train, world.seed + 1),
        num_classes=world.num_classes, input_shape=world.input_shape, device=world.device,
        generator=torch.Generator().manual_seed(world.seed), train_model=world.train,
        load_dataset=lambda key, part="train", **options: (world.images(world.n_train, world.seed + 7),
                                                           world.labels(world.n_train, 7)),
        holdout_x=world.images(world.n_train // 4, world.seed + 5),
        holdout_y=world.labels(world.n_train // 4, world.seed + 5),
    )


class _Watch:
    """Shared between the instrumented oracle and victim: was the victim called from inside oracle.query?"""

    def __init__(self) -> None:
        self.inside_query = False
        self.direct_calls = 0
        self.images_seen = 0
        self.over_budget: list[str] = []


class _WatchedVictim(nn.Module):
    def __init__(self, net: nn.Module, watch: _Watch) -> None:
        super().__init__()
        self.net = net
        self._watch = watch

    def forward(self, x: Tensor) -> Tensor:
        if not self._watch.inside_query:
            self._watch.direct_calls += 1
        else:
            self._watch.images_seen += len(x)
        return self.net(x)


def _watched_oracle(victim: nn.Module, defense: Defense, budget: int, world: TinyWorld, watch: _Watch):
    from .defender.oracle import Oracle  # lazy: torchmetrics

    class WatchedOracle(Oracle):
        log: list[tuple[int, float]]

        def query(self, x: Tensor) -> Tensor:
            if isinstance(x, Tensor) and len(x) > self.remaining:
                watch.over_budget.append(f"asked for {len(x)} images with {self.remaining} of {self.budget} left")
            watch.inside_query = True
            try:
                out = super().query(x)
            finally:
                watch.inside_query = False
            self.log.append((len(x), float(x.double().sum())))
            return out

    oracle = WatchedOracle(_WatchedVictim(victim, watch), defense, budget=budget, input_shape=world.input_shape,
                           num_classes=world.num_classes, device=world.device)
    oracle.log = []
    return oracle


def make_attack_context(budget: int = 150, world: TinyWorld | None = None, defense: Defense | None = None,
                        checkpoint: Callable[[nn.Module, int, bool], None] | None = None) -> AttackContext:
    """An AttackContext over the tiny world whose oracle and victim are instrumented (see :func:`check_attack`)."""
    world = world or TinyWorld()
    if defense is None:
        defense = _Identity()
    watch = _Watch()
    oracle = _watched_oracle(world.victim(), defense, budget, world, watch)
    oracle._conformance_watch = watch
    pool_x, pool_truth = world.images(world.n_pool, world.seed + 2), world.labels(world.n_pool, world.seed + 2)

    def seed_set(per_class: int) -> tuple[Tensor, Tensor]:
        from .attacks.base import class_balanced_indices

        idx = class_balanced_indices(pool_truth, per_class, world.num_classes,
                                     torch.Generator().manual_seed(world.seed + 9))
        return pool_x[idx], pool_truth[idx]

    return AttackContext(
        oracle=oracle, pool_x=pool_x, seed_set=seed_set, num_classes=world.num_classes,
        input_shape=world.input_shape, generator=torch.Generator().manual_seed(world.seed), device=world.device,
        new_surrogate=world.new_net, train=world.train,
        to_targets=lambda probs: probs.detach().float(),
        checkpoint=checkpoint or (lambda model, round_idx, fresh: None), log=lambda msg: None,
    )


class _Identity(Defense):
    preserves_argmax = True

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        return probs


# ----------------------------------------------------------------------------------------------------------------
# Naming: which plugin registered what
# ----------------------------------------------------------------------------------------------------------------

def _resolve(kind: str, target: Any, base: type) -> tuple[Any, str]:
    """(class or factory, description naming key and plugin) for a registry key, class or factory."""
    if isinstance(target, str):
        from .plugins import get_catalog

        entry = get_catalog().registry(kind).entry(target)
        return entry.obj, f"{kind[:-1]} {target!r} (registered by plugin {entry.source})"
    if isinstance(target, type):
        key = _key_for(kind, target)
        where = f" (key {key[0]!r}, registered by plugin {key[1]})" if key else ""
        return target, f"{kind[:-1]} {target.__module__}.{target.__qualname__}{where}"
    name = getattr(target, "__qualname__", type(target).__name__)
    return target, f"{kind[:-1]} {getattr(target, '__module__', '?')}.{name}"


def _key_for(kind: str, obj: Any) -> tuple[str, str] | None:
    try:
        from .plugins import get_catalog

        for entry in get_catalog().registry(kind).entries():
            if entry.obj is obj:
                return entry.key, entry.source
    except StealbenchError:
        pass
    return None


def _construct(factory: Any, base: type, kwargs: dict[str, Any]) -> Any:
    obj = factory(**kwargs)
    if not isinstance(obj, base):
        raise TypeError(f"constructed a {type(obj).__name__}, which is not a {base.__module__}.{base.__qualname__}")
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Defenses
# ----------------------------------------------------------------------------------------------------------------

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


def _simplex_problem(released: Any, probs: Tensor) -> tuple[str, str] | None:
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
    try:
        torch.manual_seed(seed)
        defense.setup(make_defense_setup(world))
        defense = defense.to(world.device).eval()
    except Exception as exc:
        raise ConformanceError(who, [("setup", f"{type(exc).__name__}: {exc}")]) from exc

    victim = world.victim()
    batches = _probe_batches(world, victim)

    def answer(d: Defense, x: Tensor, probs: Tensor) -> Tensor:
        with torch.no_grad():
            return d(x, probs)

    def answers(d: Defense) -> list[Tensor]:
        torch.manual_seed(seed + 1)
        return [answer(d, x, p) for x, p in batches]

    # simplex, shape, dtype, device, inputs unchanged, argmax -- on a fresh instance
    first: list[Tensor] = []
    try:
        torch.manual_seed(seed + 1)
        for dtype in (torch.float32, torch.float64):
            for x, probs in batches:
                probs = probs.to(dtype)
                x_before, p_before = x.clone(), probs.clone()
                released = answer(defense, x, probs)
                if dtype == torch.float32:
                    first.append(released)
                if not torch.equal(x, x_before) or not torch.equal(probs, p_before):
                    fail("inputs-unchanged", "modified x or probs in place")
                problem = _simplex_problem(released, probs)
                if problem:
                    fail(*problem)
                    continue
                if defense.preserves_argmax:
                    changed = (released.argmax(-1) != probs.argmax(-1)).sum().item()
                    if changed:
                        fail("argmax", f"declares preserves_argmax=True but changed the top-1 class of {changed} "
                                       f"of {len(probs)} rows")
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
    elif not defense.randomized:
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

    try:
        report = defense.report()
        if not isinstance(report, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in report.items()):
            fail("report", f"report() returned {report!r}")
    except Exception as exc:
        fail("report", f"{type(exc).__name__}: {exc}")

    if failures:
        raise ConformanceError(who, _dedupe(failures))


def _dedupe(failures: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for item in failures:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


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
    from .data.base import ImageDataset

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


def check_reproduction(target: str) -> None:
    """Check a registered reproduction (or a reproduction YAML file) against :data:`REPRODUCTION_RULES`.

    Static: parses the file and its quick version, checks the names it uses; runs nothing."""
    from .analysis.claims import FIELDS
    from .analysis.claims_spec import is_yaml_path, reproduction_file
    from .errors import ConfigError
    from .grid import check_keys, load_grid
    from .plugins import get_catalog

    who = f"reproduction {target!r}"
    try:
        paths = [reproduction_file(target)]
    except ConfigError as exc:
        raise ConformanceError(who, [("reproduction-file", str(exc))]) from exc
    if not is_yaml_path(target):
        quick = paths[0].with_name(f"{paths[0].stem}_quick{paths[0].suffix}")
        paths += [quick] if quick.is_file() else []
        who += f" (registered by plugin {get_catalog().reproductions.source(target)})"
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            grid = load_grid(path)
        except ConfigError as exc:
            failures.append(("reproduction-file", f"{path.name}: {exc}"))
            continue
        if grid.claims is None or not grid.claims.claims:
            failures.append(("reproduction-file", f"{path.name} has no `claims:` section"))
            continue
        try:
            check_keys(grid.runs)
        except ConfigError as exc:
            failures.append(("reproduction-keys", f"{path.name}: {exc}"))
        fields = {"runs": set(FIELDS["runs"]) | _defense_params(grid.runs), "utility": set(FIELDS["utility"])}
        sweep = grid.claims.utility
        if sweep is not None:
            fields["utility"] |= set(sweep.params)
            try:
                defense = get_catalog().defenses.get(sweep.defense)
                for setting in sweep.settings():
                    defense(**setting)
            except Exception as exc:
                failures.append(("reproduction-keys", f"{path.name}: utility defense {sweep.defense!r}: "
                                                      f"{type(exc).__name__}: {exc}"))
        for claim in grid.claims.claims:
            for i, part in enumerate(claim.parts):
                unknown = sorted((set(part.primary) | set(part.secondary or {})) - fields[part.source])
                if unknown:
                    failures.append(("reproduction-select", f"{path.name}: claim {claim.id!r} part {i} selects on "
                                     f"{unknown}, which {part.source} records lack (they have "
                                     f"{', '.join(sorted(fields[part.source]))})"))
    if failures:
        raise ConformanceError(who, _dedupe(failures))


def _defense_params(runs: list) -> set[str]:
    """The init parameters of every defense a grid runs: the fields its run records carry besides FIELDS."""
    from .plugins import get_catalog

    names: set[str] = set()
    for run in runs:
        key = run.args[run.args.index("--defense") + 1]
        try:
            names |= set(inspect.signature(get_catalog().defenses.get(key)).parameters) - {"self"}
        except Exception:  # an unknown key is reported by reproduction-keys
            continue
        names |= {a.split(".", 2)[1] for a in run.args if a.startswith("--defense.")}
    return names


def check_plugin(name: str, **options: Any) -> list[str]:
    """Run the checks on every defense, attack, architecture and data set the plugin `name` registered.

    Returns the keys checked. ``options`` (e.g. ``budget=``, ``world=``) go to the checks that accept them.
    """
    from .plugins import get_catalog

    catalog = get_catalog()
    plugins = {p.name: p for p in catalog.plugins}
    if name not in plugins:
        raise StealbenchError(f"no loaded plugin is called {name!r}; loaded: {', '.join(sorted(plugins))}")
    checked = []
    errors: list[ConformanceError] = []
    for kind, keys in plugins[name].registered.items():
        check = {"defenses": check_defense, "attacks": check_attack, "architectures": check_architecture,
                 "datasets": check_dataset, "reproductions": check_reproduction}.get(kind)
        for key in keys if check else []:
            try:
                check(key, **{k: v for k, v in options.items() if k in inspect.signature(check).parameters})
            except ConformanceError as exc:
                errors.append(exc)
            checked.append(key)
    if errors:
        raise ConformanceError(f"plugin {plugins[name].source}",
                               [(rule, f"{exc.who}: {detail}") for exc in errors for rule, detail in exc.failures])
    return checked


# ----------------------------------------------------------------------------------------------------------------
# Throwaway distributions and pytest fixtures (opt-in: pytest_plugins = ["stealbench.testing"])
# ----------------------------------------------------------------------------------------------------------------

def write_distribution(root: Path, name: str, modules: dict[str, str], *, entry_points: dict[str, str] | None = None,
                       version: str = "0.1.0") -> Path:
    """Write an importable distribution (modules + ``.dist-info`` with stealbench entry points) under `root`.

    Put `root` on ``sys.path`` and ``importlib.metadata`` sees it as installed. `modules` maps module names to
    source text (dedented); `entry_points` maps entry-point names to ``module`` or ``module:attr``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    eps = entry_points if entry_points is not None else {m: m for m in modules}
    (info / "entry_points.txt").write_text("[stealbench]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return root


def _clear_catalog() -> None:
    from . import plugins

    plugins.get_catalog.cache_clear()


try:
    import pytest
except ImportError:  # pragma: no cover - the kit's functions work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def stealbench_catalog() -> Iterator[Any]:
        """The catalogue, loaded afresh for this test (and cleared afterwards)."""
        from .plugins import get_catalog

        _clear_catalog()
        yield get_catalog()
        _clear_catalog()

    @pytest.fixture
    def stealbench_distribution(tmp_path: Path, monkeypatch: Any) -> Iterator[Callable[..., Path]]:
        """Factory: ``stealbench_distribution("stealbench-x", {"stealbench_x": SOURCE})`` installs a throwaway
        plugin distribution for this test (on sys.path, seen by importlib.metadata) and clears the catalogue."""
        import importlib
        import sys

        added: list[str] = []

        def make(name: str, modules: dict[str, str], **options: Any) -> Path:
            root = write_distribution(tmp_path / f"dist-{name}", name, modules, **options)
            monkeypatch.syspath_prepend(str(root))
            importlib.invalidate_caches()
            added.extend(modules)
            _clear_catalog()
            return root

        yield make
        for module in added:
            sys.modules.pop(module, None)
        _clear_catalog()

    @pytest.fixture
    def defense_setup() -> DefenseSetup:
        """The DefenseSetup the conformance checks use (tiny victim, random 8x8 images)."""
        return make_defense_setup()

    @pytest.fixture
    def attack_context() -> Callable[..., AttackContext]:
        """Factory ``attack_context(budget=150, defense=None)`` for an instrumented tiny AttackContext."""
        return lambda budget=150, defense=None: make_attack_context(budget, defense=defense)
