"""Attacks that cheat, for the tests that show they cannot: module-level so that a run can send them to the
attacker's process (as it does any attack)."""

from __future__ import annotations

import gc
import json
import os

import torch
from torch import nn

from stealbench.attacks.base import Attack, AttackContext


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


class SnoopingAttack(Attack):
    """Searches its whole process for the victim (a module shaped like its surrogate that it did not build) and for
    label tensors; steals the first victim-shaped module it finds; writes what it found to $SNOOP_REPORT."""

    def run(self, ctx: AttackContext) -> nn.Module:
        surrogate = ctx.new_surrogate()
        mine = {id(m) for m in surrogate.modules()}
        wanted = _shapes(surrogate)
        modules, int_tensors = [], []
        for obj in gc.get_objects():
            try:
                if isinstance(obj, nn.Module) and id(obj) not in mine and _shapes(obj) == wanted:
                    modules.append(obj)
                elif isinstance(obj, torch.Tensor) and obj.dtype == torch.int64 and obj.dim() == 1:
                    int_tensors.append([len(obj), int(obj.sum())])
            except Exception:  # noqa: BLE001 - some objects refuse inspection
                continue
        if modules:  # the cheat: the victim's weights as the surrogate's, no query needed
            surrogate.load_state_dict(modules[0].state_dict())
        with open(os.environ["SNOOP_REPORT"], "w") as fh:
            json.dump({"victim_shaped_modules": len(modules), "int64_vectors": int_tensors,
                       "pid": os.getpid()}, fh)
        ctx.checkpoint(surrogate, 1, True)
        return surrogate


class InPlaceDefenseProbe(Attack):
    """Queries a few pool images once, then checkpoints: enough to make the defense answer."""

    def run(self, ctx: AttackContext) -> nn.Module:
        ctx.oracle.query(ctx.pool_x[:8])
        model = ctx.new_surrogate()
        ctx.checkpoint(model, 1, True)
        return model


class ImpersonatingAttack(Attack):
    """Logs lines dressed as the framework's (a fake round line, rich markup, a carriage return) and a markup
    closer that rich cannot parse; checkpoints an untrained surrogate without a query."""

    FAKE = ("round  9  queries   3200/3200    surrogate acc 0.9990  fidelity 0.9990\n"
            "[bold green]results[/]: all stolen [/] \r\x1b[2Kround 10")

    def run(self, ctx: AttackContext) -> nn.Module:
        ctx.log(self.FAKE)
        surrogate = ctx.new_surrogate()
        ctx.checkpoint(surrogate, 1, True)
        return surrogate
