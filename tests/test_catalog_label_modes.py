"""Issue 4 label modes: soft/hard unchanged, invert (reverse sigmoid), smooth (averaged answers, exact counting)."""


import pytest
import torch
from torch import nn

from stealbench.defenses.deceptive import reverse_sigmoid
from stealbench.defenses.noise import LogitNoise
from stealbench.errors import ConfigError
from stealbench.label_modes import (LabelOptions, SmoothingOracle, effect_removed, estimate_reverse_sigmoid,
                                    invert_reverse_sigmoid, make_label_mode)
from stealbench.defender.oracle import Oracle


def confident(n=300, seed=0, scale=25.0):
    """Victim-like answers: a trained classifier's softmax is usually very peaked."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, 10, generator=g) * scale, -1)


def test_soft_and_hard_are_unchanged():
    p = confident(20, scale=2.0)
    assert torch.equal(make_label_mode("soft", 10)(p), p)
    hard = make_label_mode("hard", 10)(p)
    assert torch.equal(hard, nn.functional.one_hot(p.argmax(-1), 10).float())
    oracle = object()
    assert make_label_mode("hard", 10).wrap_oracle(oracle) is oracle


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.1), (0.5, 0.3)])
def test_invert_recovers_the_clean_probabilities_with_known_parameters(beta, gamma):
    clean = confident(120)
    released = reverse_sigmoid(clean, beta, gamma)
    recovered, solved = invert_reverse_sigmoid(released, beta, gamma)
    assert solved.float().mean() > 0.95
    err = (recovered - clean).abs().sum(-1)
    assert (err < 1e-3).float().mean() > 0.8  # most answers recovered almost exactly
    effect = effect_removed(clean, released, recovered)
    assert effect["l1_removed"] > 0.9, effect  # > 90% of the defense's perturbation undone
    # the label mode does the same through the attack's to_targets
    mode = make_label_mode("invert", 10, LabelOptions(beta=beta, gamma=gamma))
    torch.testing.assert_close(mode(released), recovered.float())


def test_invert_is_exact_on_a_golden_style_confident_vector():
    clean = torch.tensor([[0.97, 0.02, 0.005, 0.004, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0]])
    recovered, solved = invert_reverse_sigmoid(reverse_sigmoid(clean, 1.0, 0.1), 1.0, 0.1)
    assert solved.all()
    torch.testing.assert_close(recovered, clean, atol=2e-4, rtol=0)


def test_invert_estimates_parameters_that_undo_most_of_the_perturbation():
    clean = confident(120, seed=1)
    released = reverse_sigmoid(clean, 1.0, 0.1)
    (beta, gamma), rows = estimate_reverse_sigmoid(released)
    assert rows > 0
    recovered, _ = invert_reverse_sigmoid(released, beta, gamma)
    assert effect_removed(clean, released, recovered)["l1_removed"] > 0.5


def test_smooth_averages_several_answers_and_counts_each_as_a_query():
    torch.manual_seed(0)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    oracle = Oracle(victim, LogitNoise(eps=2.0, seed=1), budget=100, input_shape=(1, 8, 8), num_classes=10)
    mode = make_label_mode("smooth", 10, LabelOptions(samples=8))
    wrapped = mode.wrap_oracle(oracle)
    assert isinstance(wrapped, SmoothingOracle) and wrapped.budget == 12 and wrapped.remaining == 12
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
    with pytest.raises(ConfigError, match="label_mode must be one of soft, hard, invert, smooth"):
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
    assert results["identity"]["label_mode"] == "smooth"
