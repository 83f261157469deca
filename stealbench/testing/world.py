"""The tiny world the checks run in, the instrumented oracle, and how a checked component is named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..attacks.base import AttackContext
from ..defenses.base import Defense, DefenseSetup
from ..errors import StealbenchError


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
    from ..defender.oracle import Oracle  # lazy: torchmetrics

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
                        checkpoint: Callable[[nn.Module, int, bool], None] | None = None,
                        label_mode: str = "soft") -> AttackContext:
    """An AttackContext over the tiny world whose oracle and victim are instrumented (see :func:`check_attack`);
    `ctx.to_targets` is the registered label mode `label_mode` (one query per image: `soft`, `hard`)."""
    from ..attacker.label_modes.base import make_label_mode  # attacker-side code, as in a run

    world = world or TinyWorld()
    mode = make_label_mode(label_mode, world.num_classes)
    if mode.queries_per_image != 1:
        raise ValueError(f"make_attack_context: label mode {label_mode!r} asks {mode.queries_per_image} times per "
                         "image; the kit's oracle is not wrapped (use a mode that asks once)")
    if defense is None:
        defense = _Identity()
    watch = _Watch()
    oracle = _watched_oracle(world.victim(), defense, budget, world, watch)
    oracle._conformance_watch = watch
    pool_x, pool_truth = world.images(world.n_pool, world.seed + 2), world.labels(world.n_pool, world.seed + 2)

    def seed_set(per_class: int) -> tuple[Tensor, Tensor]:
        from ..attacks.base import class_balanced_indices

        idx = class_balanced_indices(pool_truth, per_class, world.num_classes,
                                     torch.Generator().manual_seed(world.seed + 9))
        return pool_x[idx], pool_truth[idx]

    return AttackContext(
        oracle=oracle, pool_x=pool_x, seed_set=seed_set, num_classes=world.num_classes,
        input_shape=world.input_shape, generator=torch.Generator().manual_seed(world.seed), device=world.device,
        new_surrogate=world.new_net, train=world.train,
        to_targets=mode,
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
        from ..plugins import get_catalog

        entry = get_catalog(attacks=True).registry(kind).entry(target)
        return entry.obj, f"{kind[:-1]} {target!r} (registered by plugin {entry.source})"
    if isinstance(target, type):
        key = _key_for(kind, target)
        where = f" (key {key[0]!r}, registered by plugin {key[1]})" if key else ""
        return target, f"{kind[:-1]} {target.__module__}.{target.__qualname__}{where}"
    name = getattr(target, "__qualname__", type(target).__name__)
    return target, f"{kind[:-1]} {getattr(target, '__module__', '?')}.{name}"


def _key_for(kind: str, obj: Any) -> tuple[str, str] | None:
    try:
        from ..plugins import get_catalog

        for entry in get_catalog(attacks=True).registry(kind).entries():
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



def _dedupe(failures: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for item in failures:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out

