"""The conformance kit: every registered defense and attack passes it, and each rule catches what it should."""

from __future__ import annotations

import os

import pytest

import adversaries
import torch

from stealbench.attacks import Attack
from stealbench.defenses import Defense
from stealbench.plugins import get_catalog
from stealbench.testing import (ATTACK_RULES, DEFENSE_RULES, ConformanceError, check_attack, check_defense,
                                check_plugin, stealbench_distribution)  # noqa: F401  (fixture)

# Parametrised from the registry at collection time: components added by anyone (built-ins or installed plugins)
# are covered without editing this file.
_catalog = get_catalog(attacks=True)  # the attacks' side too: the kit runs them
DEFENSES = sorted(_catalog.defenses)
ATTACKS = sorted(_catalog.attacks)


@pytest.mark.parametrize("key", DEFENSES)
def test_registered_defense_conforms(key):
    check_defense(key)


#: attacks whose defaults need more than the kit's 150 queries (the data-free attacks' batches of 128-256 x (m+1));
#: dfms-hl: fewer query-free GAN and warm-up steps (the kit runs an attack three times: soft twice, hard once)
SMALL = {"dfme": {"batch_size": 16}, "maze": {"batch_size": 8, "directions": 4},
         "dfms-hl": {"pretrain_steps": 20, "warmup_epochs": 2}}


@pytest.mark.parametrize("key", ATTACKS)
def test_registered_attack_conforms(key):
    check_attack(key, kwargs=SMALL.get(key))


def test_builtin_architectures_conform():
    check_plugin("stealbench.models.builtin")


# --- each rule catches its violation ---------------------------------------------------------------------------

class Unnormalised(Defense):
    def forward(self, x, probs):
        return probs * 2


class WrongDtype(Defense):
    def forward(self, x, probs):
        return probs.half()


class InPlace(Defense):
    def forward(self, x, probs):
        probs[:, 0] += 0.5
        probs /= probs.sum(-1, keepdim=True)
        return probs


class BatchDependent(Defense):
    """Mixes in the batch mean: its answer depends on the other queries of the batch."""

    def forward(self, x, probs):
        return 0.5 * probs + 0.5 * probs.mean(0, keepdim=True)


class Unseeded(Defense):
    def forward(self, x, probs):
        noise = torch.tensor(int.from_bytes(os.urandom(2), "little") / 65536.0)
        out = probs + noise * torch.eye(probs.shape[1])[0]
        return out / out.sum(-1, keepdim=True)


class NoReset(Defense):
    stateful = True

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x, probs):
        self.seen += len(x)
        out = probs.clone()
        out[:, 0] += self.seen
        return out / out.sum(-1, keepdim=True)


class FalseClaim(Defense):
    preserves_argmax = True

    def forward(self, x, probs):
        return probs.flip(-1)


class ForgedReport(Defense):
    """Reports the figures the framework measures (the cheat: replace the measured cost with its own)."""

    def forward(self, x, probs):
        return probs

    def report(self):
        return {"top1_changed": 0.0, "kl_nats": 0.0}


class NaNReport(Defense):
    def forward(self, x, probs):
        return probs

    def report(self):
        return {"alarm": float("nan")}


@pytest.mark.parametrize("defense, rule", [
    (Unnormalised, "simplex"), (WrongDtype, "shape-dtype-device"), (InPlace, "inputs-unchanged"),
    (BatchDependent, "batch-consistency"), (Unseeded, "seeded-repeat"), (NoReset, "reset"), (FalseClaim, "argmax"),
    (ForgedReport, "report"), (NaNReport, "report"), (adversaries.VictimTamperer, "victim-unchanged"),
    (adversaries.EvalDetector, "benign-alike"),
])
def test_defense_rules(defense, rule):
    assert rule in DEFENSE_RULES
    with pytest.raises(ConformanceError) as err:
        check_defense(defense)
    assert rule in err.value.rules
    assert f"[{rule}]" in str(err.value) and defense.__name__ in str(err.value)


def _victim_of(oracle):
    """What a cheating attack would do: dig the victim out of the oracle's closure."""
    import inspect

    fn = inspect.unwrap(oracle._answer)
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))["victim"]


class _Base(Attack):
    def run(self, ctx):
        x = ctx.pool_x[:50]
        targets = ctx.to_targets(ctx.oracle.query(x))
        model = ctx.train(ctx.new_surrogate(), x, targets, 1)
        ctx.checkpoint(model, 1, True)
        return model


class OverBudget(_Base):
    def run(self, ctx):
        model = super().run(ctx)
        try:
            ctx.oracle.query(ctx.pool_x[: ctx.oracle.remaining + 1])
        except Exception:
            pass  # swallowing the oracle's refusal does not hide it
        return model


class PeeksAtVictim(_Base):
    def run(self, ctx):
        _victim_of(ctx.oracle)(ctx.pool_x[:5])
        return super().run(ctx)


class Overwrites(_Base):
    def run(self, ctx):
        ctx.pool_x[:10] = ctx.pool_x[:10].flip(-1)
        return super().run(ctx)


class NeverEvaluates(_Base):
    def run(self, ctx):
        ctx.oracle.query(ctx.pool_x[:10])
        return ctx.new_surrogate()


class Unrepeatable(_Base):
    def run(self, ctx):
        start = int.from_bytes(os.urandom(2), "little") % 100
        ctx.oracle.query(ctx.pool_x[start:start + 10])
        return super().run(ctx)


@pytest.mark.parametrize("attack, rule", [
    (OverBudget, "budget"), (PeeksAtVictim, "oracle-only"), (Overwrites, "pool-unchanged"),
    (NeverEvaluates, "checkpoint"), (Unrepeatable, "seeded-repeat"),
])
def test_attack_rules(attack, rule):
    assert rule in ATTACK_RULES
    with pytest.raises(ConformanceError) as err:
        check_attack(attack)
    assert rule in err.value.rules and attack.__name__ in str(err.value)


def test_a_well_behaved_attack_passes():
    check_attack(_Base)


BROKEN_PLUGIN = '''
    import stealbench
    from stealbench.defenses import Defense

    class Leaky(Defense):
        """Claims to keep the top-1 but reverses the answer."""
        preserves_argmax = True

        def forward(self, x, probs):
            return probs.flip(-1)

    @stealbench.hookimpl
    def register_defenses(register):
        register("leaky", Leaky)
'''

#: its attack: a module of its own, in the group `stealbench.attacks` (the defender's process never imports it)
BROKEN_ATTACKS = '''
    import stealbench
    from stealbench.attacks import Attack

    class Peek(Attack):
        """Queries the victim behind the oracle's back."""

        def run(self, ctx):
            import inspect
            fn = inspect.unwrap(ctx.oracle._answer)
            victim = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))["victim"]
            victim(ctx.pool_x)
            model = ctx.new_surrogate()
            ctx.checkpoint(model, 1, True)
            return model

    @stealbench.hookimpl
    def register_attacks(register):
        register("peek", Peek)
'''


def test_a_broken_plugin_fails_naming_plugin_and_rule(stealbench_distribution):
    stealbench_distribution("stealbench-broken", {"sbt_broken": BROKEN_PLUGIN, "sbt_broken_attacks": BROKEN_ATTACKS},
                            entry_points={"broken": "sbt_broken"}, attack_entry_points={"broken": "sbt_broken_attacks"},
                            version="0.0.1")
    with pytest.raises(ConformanceError) as err:
        check_defense("leaky")
    message = str(err.value)
    assert "defense 'leaky' (registered by plugin broken (stealbench-broken 0.0.1))" in message
    assert "[argmax]" in message
    with pytest.raises(ConformanceError) as err:
        check_plugin("broken")
    message = str(err.value)
    assert message.startswith("plugin broken (stealbench-broken 0.0.1) breaks")
    assert "[argmax] defense 'leaky'" in message and "[oracle-only] attack 'peek'" in message


def test_builtin_digits_conforms():
    assert check_plugin("stealbench.data.digits") == ["digits"]


def test_a_dataset_in_bytes_fails_the_format_rule():
    from stealbench.data import ImageDataset
    from stealbench.testing import check_dataset

    class Bytes(ImageDataset):
        num_classes, input_shape, mean, std = 2, (1, 4, 4), (0.5,), (0.5,)

        def load(self):
            x = torch.randint(256, (40, 1, 4, 4)).float()
            y = torch.arange(40) % 2
            return x[:20], y[:20], x[20:], y[20:]

    with pytest.raises(ConformanceError) as err:
        check_dataset(Bytes)
    assert set(err.value.rules) == {"dataset-format"} and "pixel space [0, 1]" in str(err.value)
