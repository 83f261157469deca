"""Issue 18 item 6: JB-top-k and T-RND as iterative targeted PGD (the MAD paper's code); JBDA's named presets."""

import json

import pytest
import torch
from torch import nn

from helpers import attack_context, tiny_net

from stealbench.attacks.jbda import JBDA, JBDAOrekondy, JBDAPapernot, jacobian_step
from stealbench.attacks.jbda_variants import TRND, JBTopK, random_other_classes, targeted_pgd, topk_other_classes
from stealbench.cli import main
from stealbench.errors import ConfigError

SHAPE = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_thread")


def block_linear(seed=0):
    """A linear model whose class c reads only pixels [6c, 6c + 6) with positive weights: a targeted step raises
    the target's logit and leaves every other logit alone, so the target's probability must rise every step."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.zero_()
        for c in range(10):
            net[1].weight[c, 6 * c: 6 * c + 6] = torch.rand(6) + 0.5
        net[1].bias.normal_()
    return net.eval()


def images(n, seed=3, low=0.0, high=1.0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * (high - low) + low


@pytest.mark.parametrize("grad_of", ["logit", "prob"])
def test_pgd_raises_the_target_probability_every_iteration(grad_of):
    net = block_linear()
    x = images(40, low=0.3, high=0.7)  # no image-range clipping in 8 steps of 0.01
    targets = torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(4))
    probs = [torch.softmax(net(x), -1).gather(1, targets[:, None])]
    for steps in range(1, 9):
        out = targeted_pgd(net, x, targets, steps=steps, alpha=0.01, epsilon=0.1, grad_of=grad_of)
        probs.append(torch.softmax(net(out), -1).gather(1, targets[:, None]))
    probs = torch.cat(probs, 1).detach()
    assert (probs[:, 1:] > probs[:, :-1]).all()


def test_pgd_stays_within_epsilon_and_the_image_range():
    net = tiny_net().eval()
    x = images(200)  # many pixels at the edges of [0, 1]
    targets = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(5))
    out = targeted_pgd(net, x, targets, steps=20, alpha=0.02, epsilon=0.05)
    assert (out - x).abs().max() <= 0.05 + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() > 0.049  # the bound is reached, so it is what stops the points
    assert torch.equal(targeted_pgd(net, x, targets, steps=1, alpha=0.03, epsilon=0.5),
                       jacobian_step(net, x, targets, 0.03, grad_of="logit"))  # one step = one signed step


def test_pgd_batched_equals_per_image():
    net = tiny_net().eval()
    x = images(6)
    targets = torch.tensor([0, 3, 3, 7, 9, 1])
    batched = targeted_pgd(net, x, targets, steps=8, alpha=0.01, epsilon=0.1)
    chunked = targeted_pgd(net, x, targets, steps=8, alpha=0.01, epsilon=0.1, batch_size=4)
    for i in range(len(x)):  # each image alone, by hand: x <- clip(x0 + clip(x + a sign(grad z_t) - x0), 0, 1)
        x0 = x[i: i + 1]
        xi = x0.clone()
        for _ in range(8):
            xi.requires_grad_(True)
            (grad,) = torch.autograd.grad(net(xi)[0, targets[i]], xi)
            xi = (x0 + (xi.detach() + 0.01 * grad.sign() - x0).clamp(-0.1, 0.1)).clamp(0, 1)
        torch.testing.assert_close(batched[i: i + 1], xi, rtol=0, atol=1e-6)
    assert torch.equal(batched, chunked)


@pytest.mark.parametrize("cls", [JBTopK, TRND])
def test_default_augmentation_is_pgd_towards_the_reference_targets(cls):
    net = tiny_net().eval()
    x = images(30, low=0.25, high=0.75)
    labels = net(x).argmax(-1)
    attack = cls()
    assert (attack.method, attack.steps, attack.alpha, attack.lam, attack.grad_of) == ("pgd", 8, 0.01, 0.1, "logit")
    ctx, _ = attack_context(budget=10)
    ctx.generator.manual_seed(7)
    new_x = attack.augment(net, x, labels, 1, ctx)
    if cls is JBTopK:
        targets = topk_other_classes(net, x, labels, 3).flatten()
    else:
        targets = random_other_classes(labels, 10, torch.Generator().manual_seed(7))
    source = x.repeat_interleave(attack.new_per_source(10), dim=0)
    assert torch.equal(new_x, targeted_pgd(net, source, targets, steps=8, alpha=0.01, epsilon=0.1))
    before = net(source).gather(1, targets[:, None])
    after = net(new_x).gather(1, targets[:, None])
    assert (after > before).all()


@pytest.mark.parametrize("cls", [JBTopK, TRND])
def test_fgsm_option_is_the_old_single_signed_step_bit_for_bit(cls):
    # the code path before issue 18: targets as now, then jacobian_step(lam, grad_of="prob") on the repeated points
    net = tiny_net().eval()
    x = images(30)
    labels = net(x).argmax(-1)
    attack = cls(method="fgsm")
    ctx, _ = attack_context(budget=10)
    ctx.generator.manual_seed(7)
    new_x = attack.augment(net, x, labels, 1, ctx)
    if cls is JBTopK:
        old = jacobian_step(net, x.repeat_interleave(3, dim=0), topk_other_classes(net, x, labels, 3).flatten(), 0.1,
                            grad_of="prob")
    else:
        old = jacobian_step(net, x, random_other_classes(labels, 10, torch.Generator().manual_seed(7)), 0.1,
                            grad_of="prob")
    assert attack.grad_of == "prob" and torch.equal(new_x, old)


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
@pytest.mark.parametrize("budget,expected", [(50, [50]), (120, [50, 120]), (700, [50, 200, 700])])
def test_jbda_topk_query_accounting_is_exact(method, budget, expected):
    ctx, log = attack_context(budget=budget)
    JBTopK(k=3, seed_per_class=5, rounds=3, epochs_per_round=1, method=method).run(ctx)
    assert log["trained"] == expected and ctx.oracle.used == expected[-1] <= budget


def test_trnd_pgd_query_accounting_is_exact():
    ctx, log = attack_context(budget=333)
    TRND(seed_per_class=5, rounds=6, epochs_per_round=1).run(ctx)
    assert log["trained"] == [50, 100, 200, 333] and ctx.oracle.used == 333


@pytest.mark.parametrize("option,value", [("method", "ifgsm"), ("steps", 0), ("steps", 2.5), ("alpha", 0.0),
                                          ("grad_of", "loss")])
def test_bad_pgd_options_get_a_one_line_error(option, value):
    with pytest.raises(ConfigError, match=f"attack.{option}"):
        TRND(**{option: value})


# -- JBDA's named variants -------------------------------------------------------------------------------------------
def test_plain_jbda_is_unchanged_and_the_named_variants_set_their_papers_rules():
    plain, papernot, orekondy = JBDA(), JBDAPapernot(), JBDAOrekondy()
    assert (plain.direction, plain.reinit_each_round) == ("towards", True)
    assert (papernot.direction, papernot.reinit_each_round) == ("towards", False)
    assert (orekondy.direction, orekondy.reinit_each_round) == ("away", True)
    assert JBDAOrekondy(direction="towards", lam=0.2).lam == 0.2  # every option stays settable


def test_orekondy_steps_along_the_sign_of_the_label_loss_gradient():
    # the MAD code's `jbda` policy: x + lam * sign(d CE(F(x), y) / dx), clipped to [0, 1]
    net = tiny_net().eval()
    x = images(50)
    labels = net(x).argmax(-1)
    ctx, _ = attack_context(budget=10)
    new_x = JBDAOrekondy().augment(net, x, labels, 1, ctx)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(net(xg), labels, reduction="sum"), xg)
    reference = (x + 0.1 * grad.sign()).clamp(0, 1)
    clear = grad.abs() > 1e-6  # where the gradient's sign is not a rounding accident
    assert clear.float().mean() > 0.9 and torch.equal(new_x[clear], reference[clear])


@pytest.mark.parametrize("cls,surrogates", [(JBDA, 3), (JBDAPapernot, 1), (JBDAOrekondy, 3)])
def test_warm_start_trains_one_surrogate_fresh_start_one_per_round(cls, surrogates):
    ctx, log = attack_context(budget=400)
    built = []
    ctx.new_surrogate = lambda: built.append(tiny_net(len(built))) or built[-1]
    model = cls(seed_per_class=5, rounds=3, epochs_per_round=1).run(ctx)
    assert len(built) == surrogates and model is built[-1] and ctx.oracle.used == 200


# -- end to end --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_fit_jbda_topk_end_to_end(tmp_path, method):
    code = main(["fit", "--data", "digits", "--output_dir", str(tmp_path), "--name", "run", "--budget", "60",
                 "--progress_bar", "false", "--victim.epochs", "2", "--attack", "jbda-topk", "--attack.k", "2",
                 "--attack.seed_per_class", "2", "--attack.rounds", "3", "--attack.epochs_per_round", "1",
                 "--attack.method", method])
    assert code == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [p["queries"] for p in results["curve"]] == [20, 60]
    options = results["config"]["attack"]["init_args"]
    assert (options["method"], options["steps"], options["alpha"]) == (method, 8, 0.01)


def test_a_warm_start_fine_tunes_in_training_mode():
    # ctx.train returns its net in eval mode; Lightning keeps that mode, so dropout would be off while fine-tuning
    ctx, _ = attack_context(budget=400)
    modes = []
    train = ctx.train
    ctx.train = lambda model, x, targets, epochs: modes.append(model.training) or train(model, x, targets, epochs)
    JBDAPapernot(seed_per_class=5, rounds=3, epochs_per_round=1).run(ctx)
    assert modes == [True, True, True]
