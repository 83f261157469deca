"""Issue 4 label modes: soft/hard unchanged, invert (reverse sigmoid), smooth (averaged answers, exact counting)."""


import pytest
import torch
from torch import nn

from stealbench.defenses.deceptive import reverse_sigmoid
from stealbench.defenses.noise import LogitNoise
from stealbench.errors import ConfigError
from stealbench.defender.oracle import Oracle
from stealbench.attacker.label_modes import LabelOptions, ModeOracle, effect_removed, make_label_mode
from stealbench.attacker.label_modes.reverse_sigmoid import REPRODUCE_TOL, invert_reverse_sigmoid


def confident(n=300, seed=0, scale=25.0):
    """Victim-like answers: a trained classifier's softmax is usually very peaked."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, 10, generator=g) * scale, -1)


def test_soft_and_hard_are_unchanged():
    p = confident(20, scale=2.0)
    assert torch.equal(make_label_mode("soft", 10)(p), p)
    hard = make_label_mode("hard", 10)(p)
    assert torch.equal(hard, nn.functional.one_hot(p.argmax(-1), 10).float())


def uncertain(n=150, seed=3, scale=4.0):
    """Non-saturated victim answers: no probability at the defense's clip floor (1e-9), top-1 often below 0.9."""
    p = confident(3 * n, seed, scale)
    p = p[p.min(-1).values > 1e-8][:n]
    assert len(p) == n
    return p


def reproduces(recovered, released, beta, gamma):
    """Per row: the defense's forward pass on the recovered probabilities gives the answer back (max-abs)."""
    released = released.double() / released.double().sum(-1, keepdim=True)
    return (reverse_sigmoid(recovered.double(), beta, gamma) - released).abs().amax(-1) <= REPRODUCE_TOL


@pytest.mark.parametrize("beta,gamma,min_solved", [(0.6, 0.25, 0.7), (0.8, 0.2, 0.85)])
def test_invert_recovers_uncertain_victims_with_known_parameters(beta, gamma, min_solved):
    clean = uncertain()
    released = reverse_sigmoid(clean, beta, gamma)
    recovered, solved = invert_reverse_sigmoid(released.double(), beta, gamma)
    # measured: solved 0.75 / 0.94; a solved row is an exact preimage, by the defense's own forward pass
    assert solved.float().mean() >= min_solved
    assert reproduces(recovered, released, beta, gamma)[solved].all()
    # Uncertain answers often have several exact preimages (the defense's point: it is deceptive) and the
    # solver's low-entropy prior picks a wrong one for many; measured: 27% / 26% of the rows recovered within
    # L1 1e-3 and 68% / 72% of the perturbation's L1 undone.
    err = (recovered.float() - clean).abs().sum(-1)
    assert (err < 1e-3).float().mean() > 0.2
    assert effect_removed(clean, released, recovered.float())["l1_removed"] > 0.6
    # the label mode does the same through the attack's to_targets
    mode = make_label_mode("invert", 10, LabelOptions(beta=beta, gamma=gamma))
    torch.testing.assert_close(mode(released), recovered.float())


def test_invert_recovers_saturated_victims_exactly():
    clean = confident(120)
    released = reverse_sigmoid(clean, 0.6, 0.25)
    recovered, solved = invert_reverse_sigmoid(released.double(), 0.6, 0.25)
    assert solved.float().mean() > 0.95 and reproduces(recovered, released, 0.6, 0.25)[solved].all()
    assert ((recovered.float() - clean).abs().sum(-1) < 1e-3).float().mean() > 0.75  # measured 0.81


def test_invert_is_exact_on_a_golden_style_confident_vector():
    clean = torch.tensor([[0.97, 0.02, 0.005, 0.004, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0]])
    recovered, solved = invert_reverse_sigmoid(reverse_sigmoid(clean, 1.0, 0.1), 1.0, 0.1)
    assert solved.all()
    torch.testing.assert_close(recovered, clean, atol=2e-4, rtol=0)


def test_answers_without_an_exact_preimage_are_not_counted_solved():
    beta, gamma = 0.6, 0.25
    # out of the defense's range: released values are f(y_i) / Z with f in [fmin, fmax], so no answer has
    # entries in a ratio above fmax / fmin (about 3 here); a one-hot answer or a 0.9 / 0.1 split cannot occur
    impossible = torch.tensor([[1.0] + [0.0] * 9, [0.9, 0.1] + [0.0] * 8])
    recovered, solved = invert_reverse_sigmoid(impossible, beta, gamma)
    assert not solved.any() and torch.equal(recovered, impossible)
    # real answers, perturbed by 1% (noise, rounding, another defense on top): a row counts as solved only
    # if the recovered probabilities reproduce it; some have no exact preimage and must not count
    g = torch.Generator().manual_seed(5)
    answers = reverse_sigmoid(torch.cat([confident(100, seed=2), uncertain(100, seed=4)]), beta, gamma)
    noisy = answers * (1 + 0.01 * torch.randn(answers.shape, generator=g))
    noisy = noisy.double() / noisy.double().sum(-1, keepdim=True)
    recovered, solved = invert_reverse_sigmoid(noisy, beta, gamma)
    assert reproduces(recovered, noisy, beta, gamma)[solved].all()
    assert 0 < solved.float().mean() < 1


def test_smooth_averages_several_answers_and_counts_each_as_a_query():
    torch.manual_seed(0)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    oracle = Oracle(victim, LogitNoise(eps=2.0, seed=1), budget=100, input_shape=(1, 8, 8), num_classes=10)
    mode = make_label_mode("smooth", 10, LabelOptions(samples=8))
    wrapped = mode.wrap_oracle(oracle)
    assert isinstance(wrapped, ModeOracle) and wrapped.budget == 12 and wrapped.remaining == 12
    x = torch.rand(10, 1, 8, 8)
    averaged = wrapped.query(x)
    assert oracle.used == 80 and wrapped.used == 10 and wrapped.remaining == 2
    with torch.no_grad():
        clean = torch.softmax(victim(x), -1)
    single = Oracle(victim, LogitNoise(eps=2.0, seed=2), budget=10, input_shape=(1, 8, 8), num_classes=10).query(x)
    effect = effect_removed(clean, single, averaged)
    assert effect["l1_removed"] > 0.4, effect
    assert mode.effective_budget(100) == 12


def test_label_mode_errors_name_the_option():
    with pytest.raises(ConfigError, match="unknown label_mode 'fuzzy'.*argmax, average, ddae, hard, indist, invert, smooth, soft"):
        make_label_mode("fuzzy", 10)
    with pytest.raises(ConfigError, match="label_options.samples"):
        make_label_mode("smooth", 10, LabelOptions(samples=0))
    with pytest.raises(ConfigError, match="label_options.beta"):
        make_label_mode("invert", 10, LabelOptions(beta=-1.0, gamma=0.1))
    with pytest.raises(ConfigError, match="both"):
        make_label_mode("invert", 10, LabelOptions(beta=1.0))


def test_cli_runs_smooth_against_noise_with_a_pool_from_another_data_set(tmp_path, shared_data):
    """End to end: digits victim, Fashion-MNIST pool (resized to 8x8), noise defense, smooth label mode."""
    from stealbench.cli import main

    out = tmp_path / "runs"
    code = main(["fit", "--defense", "noise", "--attack", "knockoff", "--attack.policy", "adaptive",
                 "--attack.num_checkpoints", "2", "--attack.epochs", "1", "--attack.batch_size", "20",
                 "--pool_data", "fashion-mnist", "--pool_data.root", str(shared_data),
                 "--label_mode", "smooth", "--label_options.samples", "3",
                 "--victim.epochs", "2", "--budget", "150", "--progress_bar", "false",
                 "--output_dir", str(out), "--name", "e2e"])
    assert code == 0
    import json

    results = json.loads((out / "e2e" / "results.json").read_text())
    assert results["metrics"]["queries"] == 150  # 50 images x 3 answers
    assert results["identity"]["pool_data"] == "fashion-mnist"
    assert results["identity"]["label_mode"] == "smooth-samples3"  # the identity names the options
