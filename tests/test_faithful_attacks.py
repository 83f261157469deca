"""Issue 18 item 6: Knockoff's online reward model and ActiveThief's queried validation split with early stopping."""

import copy

import pytest
import torch

from helpers import attack_context, tiny_net

from stealbench.attacks.activethief import ActiveThief, agreement
from stealbench.attacks.knockoff import Knockoff, loss_reward
from stealbench.errors import ConfigError
from stealbench.testing import TinyWorld, check_attack

pytestmark = pytest.mark.usefixtures("one_thread")


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# -- knockoff: the reward model -------------------------------------------------------------------------------------
def record_reward_nets(attack):
    """Wrap `_feedback`: per answered batch, (x, answers, a copy of the net the loss reward is about to use)."""
    seen = []
    feedback = attack._feedback

    def wrapped(ctx, x, answers):
        net = attack._online if attack._online is not None else attack._model
        seen.append((x.clone(), answers.clone(), copy.deepcopy(net)))
        feedback(ctx, x, answers)

    attack._feedback = wrapped
    return seen


def test_knockoff_online_reward_model_takes_one_sgd_step_per_answered_batch():
    ctx, log = attack_context(120)
    calls = []
    query = ctx.oracle.query
    ctx.oracle.query = lambda x: (calls.append(len(x)), query(x))[1]
    attack = Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=20, online_lr=0.05,
                      online_momentum=0.5)
    seen = record_reward_nets(attack)
    attack.run(ctx)
    assert ctx.oracle.used == 120 and sum(calls) == 120 and log["trained"] == [60, 120]  # no extra queries
    assert len(seen) == len(calls) == 6 and attack.report() == {"online/steps": 6.0}
    # the loss reward of every batch is the online knockoff's cross-entropy as it was just before its step
    for (x, answers, net), logged in zip(seen, attack._reward_log):
        with torch.no_grad():
            probs = torch.softmax(net.eval()(x).double(), -1)
        assert logged["loss"] == pytest.approx(float(loss_reward(answers.double(), probs).mean()), rel=1e-9)
    # it changes after every batch, before the first checkpoint too (not the untrained first surrogate)
    assert not any(same_weights(a[2], b[2]) for a, b in zip(seen, seen[1:]))
    # and the first change is one SGD step (momentum starts at the gradient) on the first batch's answers
    x0, answers0, net0 = seen[0]
    net0.train()
    loss = -(answers0 * torch.log_softmax(net0(x0), -1)).sum(-1).mean()
    grads = torch.autograd.grad(loss, list(net0.parameters()))
    for p, g, q in zip(net0.parameters(), grads, seen[1][2].parameters()):
        torch.testing.assert_close(q, p.detach() - 0.05 * g, rtol=1e-5, atol=1e-6)


def test_knockoff_online_net_is_not_a_checkpoint_surrogate_and_draws_no_extra_surrogate():
    made = {"online": 0, "checkpoint": 0}
    for reward_model in made:
        ctx, _ = attack_context(100)
        new = ctx.new_surrogate
        ctx.new_surrogate = lambda new=new, m=reward_model: (made.__setitem__(m, made[m] + 1), new())[1]
        checkpoints = []
        ctx.checkpoint = lambda model, r, fresh, c=checkpoints: c.append(model)
        attack = Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=25, reward_model=reward_model)
        attack.run(ctx)
        if reward_model == "online":
            assert all(model is not attack._online for model in checkpoints)
    assert made["online"] == made["checkpoint"] == 3  # the first surrogate (the online net) and one per checkpoint


def test_knockoff_online_fine_tuning_keeps_the_online_net_apart_from_the_surrogate():
    ctx, _ = attack_context(100)
    attack = Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=25, retrain_from_scratch=False)
    model = attack.run(ctx)
    assert attack._online is not model and not same_weights(attack._online, model)


def test_knockoff_checkpoint_reward_model_is_the_earlier_behaviour():
    ctx, log = attack_context(120)
    checkpoints = []
    ctx.checkpoint = lambda model, r, fresh: checkpoints.append(copy.deepcopy(model))
    attack = Knockoff(policy="adaptive", num_checkpoints=2, epochs=1, batch_size=20, reward_model="checkpoint")
    seen = record_reward_nets(attack)
    attack.run(ctx)
    assert attack._online is None and attack.report() == {} and ctx.oracle.used == 120
    # batches 1-3 (before the checkpoint at 60 queries): the untrained first surrogate, all alike
    assert same_weights(seen[0][2], tiny_net()) and all(same_weights(seen[0][2], s[2]) for s in seen[1:3])
    # batches 4-6: the surrogate trained at the first checkpoint
    assert all(same_weights(checkpoints[0], s[2]) for s in seen[3:])


def test_knockoff_online_without_the_loss_reward_trains_no_online_net():
    ctx, _ = attack_context(60)
    attack = Knockoff(policy="adaptive", num_checkpoints=1, epochs=1, batch_size=20, rewards=["certainty"])
    attack.run(ctx)
    assert attack._online is None and ctx.oracle.used == 60


def test_knockoff_adaptive_online_conforms_and_repeats_under_its_seed():
    check_attack("knockoff", kwargs={"policy": "adaptive", "batch_size": 25})  # the kit runs it twice: same queries


def test_knockoff_rejects_bad_reward_model_options():
    with pytest.raises(ConfigError, match="attack.reward_model"):
        Knockoff(reward_model="previous")
    with pytest.raises(ConfigError, match="attack.online_lr"):
        Knockoff(online_lr=0)
    with pytest.raises(ConfigError, match="attack.online_momentum"):
        Knockoff(online_momentum=1.0)


# -- activethief: the validation split and early stopping ----------------------------------------------------------
def context_with_recorded_training(budget):
    """An attack_context whose training (TinyWorld's, fast) records each call's images and epochs, and whose oracle
    records each query's images."""
    ctx, log = attack_context(budget)
    queries, trained = [], []
    query = ctx.oracle.query
    ctx.oracle.query = lambda x: (queries.append(x.clone()), query(x))[1]
    world = TinyWorld()

    def train(model, x, targets, epochs):
        trained.append((x.clone(), epochs, ctx.oracle.used))
        return world.train(model, x, targets, epochs)

    ctx.train = train
    return ctx, log, queries, trained


@pytest.mark.parametrize("strategy", ["random", "kcenter", "uncertainty-kcenter"])
def test_activethief_validation_queries_are_counted_and_never_trained_on(strategy):
    ctx, log, queries, trained = context_with_recorded_training(103)
    attack = ActiveThief(strategy=strategy, rounds=3, epochs=3, patience=1)
    attack.validate(budget=103, num_classes=10, pool_size=400)
    attack.run(ctx)
    assert ctx.oracle.used == 103 and sum(len(q) for q in queries) == 103
    assert log["points"] == [25, 51, 77, 103]  # the validation split is part of the initial 25 queries
    val = queries[0]
    assert len(val) == 5 == attack.validation_size(103)  # 0.2 x 25
    val_rows = {tuple(v.flatten().tolist()) for v in val}
    for x, epochs, used in trained:
        assert epochs == 1 and len(x) == used - 5  # every training query, never the validation ones
        assert not val_rows & {tuple(r.flatten().tolist()) for r in x}
    queried = torch.cat(queries).flatten(1)
    assert len(torch.unique(queried, dim=0)) == 103  # no pool image queried twice
    assert 4 <= len(trained) <= 12 and attack.report()["queries/validation"] == 5.0


def test_activethief_early_stopping_restores_the_best_epoch():
    # training is scripted: epoch k loads states[k]; the victim's own weights agree with it everywhere
    ctx, log, queries, trained = context_with_recorded_training(60)
    victim, other = tiny_net(1).state_dict(), tiny_net(7).state_dict()
    script = [other, victim, other, other, victim, victim]
    checkpoints = []
    ctx.checkpoint = lambda model, r, fresh: checkpoints.append(copy.deepcopy(model))

    def train(model, x, targets, epochs):
        trained.append(epochs)
        model.load_state_dict(script[len(trained) - 1])
        return model

    ctx.train = train
    attack = ActiveThief(strategy="random", rounds=0, epochs=6, patience=2)
    model = attack.run(ctx)
    val_x = queries[0]
    val_labels = tiny_net(1)(val_x).argmax(-1)
    assert agreement(tiny_net(7), val_x, val_labels) < 1.0 == agreement(tiny_net(1), val_x, val_labels)
    assert trained == [1, 1, 1, 1]  # best at epoch 2, then 2 epochs without improvement: stopped
    assert same_weights(model, tiny_net(1)) and same_weights(checkpoints[0], tiny_net(1))
    assert attack._best_epochs == [2] and attack.report()["early_stopping/mean_best_epoch"] == 2.0


def test_activethief_early_stopping_keeps_the_earlier_of_equal_epochs():
    ctx, _, _, trained = context_with_recorded_training(60)
    victim = tiny_net(1).state_dict()
    shifted = {k: v + 0.5 if k == "3.bias" else v for k, v in victim.items()}  # every logit + 0.5: same argmax
    script = [victim, shifted, tiny_net(3).state_dict(), tiny_net(4).state_dict()]

    def train(model, x, targets, epochs):
        trained.append(epochs)
        model.load_state_dict(script[len(trained) - 1])
        return model

    ctx.train = train
    model = ActiveThief(strategy="random", rounds=0, epochs=10, patience=3).run(ctx)
    assert len(trained) == 4 and same_weights(model, tiny_net(1))  # epoch 2 ties epoch 1: not better


def test_activethief_without_validation_is_the_earlier_behaviour():
    ctx, log, queries, trained = context_with_recorded_training(103)
    attack = ActiveThief(strategy="kcenter", rounds=3, epochs=4, val_fraction=0)
    attack.validate(budget=103, num_classes=10, pool_size=400)
    attack.run(ctx)
    assert [(len(x), epochs) for x, epochs, _ in trained] == [(25, 4), (51, 4), (77, 4), (103, 4)]
    assert [len(q) for q in queries] == [25, 26, 26, 26] and attack.report() == {}


def test_activethief_rejects_bad_validation_settings():
    for bad in (-0.1, 0.9, 1.5):
        with pytest.raises(ConfigError, match="attack.val_fraction must be in"):
            ActiveThief(val_fraction=bad)
    for bad in (0, -2, 1.5):
        with pytest.raises(ConfigError, match="attack.patience"):
            ActiveThief(patience=bad)
    with pytest.raises(ConfigError, match="leaving none to train on"):  # initial set of 1: nothing left to train
        ActiveThief(rounds=5).validate(budget=6, num_classes=10, pool_size=400)
    with pytest.raises(ConfigError, match="leaving none to train on"):
        ActiveThief(initial=4, val_fraction=0.89).validate(budget=100, num_classes=10, pool_size=400)
    ActiveThief(rounds=5, val_fraction=0).validate(budget=6, num_classes=10, pool_size=400)  # no split: fine
    ActiveThief(initial=10, val_fraction=0.85).validate(budget=100, num_classes=10, pool_size=400)  # 8 of 10 held out
