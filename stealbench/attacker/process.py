"""The attacker's process: builds the AttackContext from what a real attacker holds and runs the attack.

Its first request fetches the pool; every later one is a query, a checkpoint (the surrogate's weights, to be
evaluated on the defender's side), the labelled seed set, or a log line. See ``stealbench.defender.referee``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

# preloaded by the fork server: the attacker's process starts with these imported
import lightning  # noqa: F401

from ..attacks.base import Attack, AttackContext, NetworkFactory
from ..config import SurrogateConfig
from ..reproducibility import process_record
from ..seeding import RoleCounter, role_generator, role_seed, seeded_globals
from ..transport import PipeChannel, error_payload
from .label_modes.kit import AttackerKit, SeedSetCache
from .remote import RelayLogger, RemoteOracle


@dataclass
class AttackerSpec:
    """What the attacker's process is sent once its attack is built (plain settings; the pool comes over the
    channel). `attack`: None, the attack built from its name on this side (session.py); an Attack only for a
    library caller that built the attack itself (its code has run in the caller's process already)."""

    attack: Attack | None
    attack_key: str
    #: the label mode by name and options ({key, options}, plain data): built on this side (session.py), where it
    #: wraps the oracle and turns answers into targets
    label_mode: dict[str, Any]
    seed: int
    budget: int
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    surrogate: SurrogateConfig
    train_settings: Any  # training.TrainSettings of the surrogate (recipe, trainer options); no logger
    device: str


class SurrogateFactory:
    """`new_surrogate()`: the surrogate architecture, each instance initialised from its own role seed."""

    def __init__(self, spec: AttackerSpec, seeds: RoleCounter | None = None) -> None:
        self.spec = spec
        self.seeds = seeds if seeds is not None else RoleCounter(spec.seed, "surrogate_init")

    def __call__(self) -> nn.Module:
        from ..models.factory import build_net

        with seeded_globals(self.seeds.next()):
            return build_net(self.spec.surrogate.arch, num_classes=self.spec.num_classes,
                             input_shape=self.spec.input_shape, mean=self.spec.mean, std=self.spec.std,
                             pretrained=self.spec.surrogate.pretrained)


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to this process when the main process dies (no orphaned attackers)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass
    if os.getppid() == 1:
        os._exit(1)


def build_context(spec: AttackerSpec, channel: PipeChannel, label_mode: Any) -> AttackContext:
    from ..training import fit

    hello = channel.call("hello")
    device = torch.device(spec.device)
    oracle = RemoteOracle(channel, budget=spec.budget, input_shape=spec.input_shape, num_classes=spec.num_classes)
    settings = replace(spec.train_settings, logger=RelayLogger(channel))
    train_seeds = RoleCounter(spec.seed, "surrogate_train")

    def train(model: nn.Module, x: Tensor, targets: Tensor, epochs: int) -> nn.Module:
        seed = train_seeds.next()
        with seeded_globals(seed):
            return fit(model, x, targets, epochs, settings, seed=seed, log_name="surrogate")

    def checkpoint(model: nn.Module, round_idx: int, retrained_from_scratch: bool) -> None:
        channel.call("checkpoint", state=dict(model.state_dict()), round=int(round_idx),
                     retrained=bool(retrained_from_scratch))

    def fetch_seed_set(per_class: int) -> tuple[Tensor, Tensor]:
        reply = channel.call("seed_set", per_class=int(per_class))
        return reply["x"], reply["y"]

    # one seed set per run, shared by the attack and a label mode that needs labelled images
    seed_set = SeedSetCache(fetch_seed_set)
    log = lambda message: channel.notify("say", text=str(message))  # noqa: E731
    label_mode.prepare(_attacker_kit(spec, hello, device, settings, seed_set, log))
    return AttackContext(
        oracle=label_mode.wrap_oracle(oracle, role_generator(spec.seed, "attack", 1)), pool_x=hello["pool_x"],
        num_classes=spec.num_classes,
        input_shape=spec.input_shape, generator=role_generator(spec.seed, "attack"), device=device,
        new_surrogate=SurrogateFactory(spec), train=train, to_targets=label_mode, checkpoint=checkpoint,
        seed_set=seed_set.get, pool_labels=hello.get("pool_labels"), log=log,
        new_network=NetworkFactory(role_seed(spec.seed, "attack"), device),
        optimizer=_step_optimizers(spec, device),
    )


def _step_optimizers(spec: AttackerSpec, device: torch.device):
    """`ctx.optimizer`: step-level optimisers of the surrogate's recipe, on this device, at --trainer.precision."""
    from ..steps import make_optimizer_factory

    settings = spec.train_settings
    return make_optimizer_factory(settings.resolved_recipe(), device, settings.trainer.get("precision"))


def _attacker_kit(spec: AttackerSpec, hello: dict, device: torch.device, settings, seed_set: SeedSetCache,
                  log) -> AttackerKit:
    """The attacker's own resources for the label mode: its own role seeds ("shadow"), never the surrogate's."""
    from ..training import fit

    seeds = RoleCounter(spec.seed, "shadow")
    seeds.count = 1  # index 0 is the mode's generator
    quiet = replace(settings, logger=None)  # shadow training is the mode's business, not the surrogate's curve

    def train(model: nn.Module, x: Tensor, targets: Tensor, epochs: int) -> nn.Module:
        seed = seeds.next()
        with seeded_globals(seed):
            return fit(model, x, targets, epochs, quiet, seed=seed, log_name="shadow")

    return AttackerKit(pool_x=hello["pool_x"], num_classes=spec.num_classes, input_shape=spec.input_shape,
                       device=device, new_model=SurrogateFactory(spec, seeds), train=train,
                       generator=role_generator(spec.seed, "shadow", 0), seed_set=seed_set,
                       pool_labels=hello.get("pool_labels"), log=log)


def _finite(report: dict) -> dict[str, float]:
    """The label mode's figures the defender's schema accepts: finite numbers (a NaN misfit is no figure)."""
    import math

    return {str(k): float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def attack_report(attack: Attack) -> dict[str, float]:
    """`attack.report()`, checked here so that a bad report is the attack's one-line error, not a protocol fault:
    a mapping of names to numbers; non-finite numbers are dropped (as the label mode's); ``label_mode/`` refused."""
    from ..errors import ConfigError

    report = attack.report()
    if not isinstance(report, dict) or not all(isinstance(k, str) and k for k in report):
        raise ConfigError(f"{type(attack).__name__}.report() must return a dict of names to numbers, got "
                          f"{type(report).__name__}")
    taken = [k for k in report if k.removeprefix("attack/").startswith("label_mode/")]
    if taken:
        raise ConfigError(f"{type(attack).__name__}.report(): {', '.join(taken)} lie under label_mode/, the label "
                          "mode's figures; name them otherwise")
    return _finite(report)


def run_attacker(conn, spec: AttackerSpec, attack: Attack | None = None, label_mode: Any = None) -> None:
    """Run `attack` (built on this side; else the spec's) against the defender at the other end of `conn`, its
    answers turned into targets by `label_mode` (built on this side in the handshake; else from the spec's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it ends this one
    attack = attack if attack is not None else spec.attack
    from ..quiet import quiet_lightning

    quiet_lightning()
    channel = PipeChannel(conn)
    try:
        if label_mode is None:
            from .label_choice import LabelModeChoice
            from .label_modes.base import build_label_mode

            label_mode, _ = build_label_mode(LabelModeChoice.from_data(spec.label_mode), spec.num_classes)
        ctx = build_context(spec, channel, label_mode)
        with seeded_globals(role_seed(spec.seed, "attack")):
            attack.run(ctx)
        # the settings this side trained with, taken after training (Lightning sets deterministic modes per Trainer)
        channel.send_final("done", {"label_mode": _finite(label_mode.report()),
                                    "attack": attack_report(attack), "environment": process_record()})
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the main process, which decides
        try:
            channel.send_final("failed", error_payload(exc, traceback.format_exc()))
        except (OSError, EOFError, BrokenPipeError):
            pass  # the main process is gone
    finally:
        conn.close()


__all__ = ["AttackerSpec", "SurrogateFactory", "attack_report", "build_context", "run_attacker"]
