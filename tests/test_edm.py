"""EDM: a deterministic hash of x picks the member; members agree on the victim's task and disagree out of it.

The diversity loss is this implementation's reading of the paper (see stealbench/defenses/edm.py: not verified
against the paper's text or code); these tests check the behaviour the paper asks of it, and that the diversity
term, not chance, is what makes the members disagree out of distribution.
"""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits

from stealbench.defenses.base import DefenseSetup
from stealbench.defenses.edm import EnsembleOfDiverseModels, agreement, coherence_loss
from stealbench.defenses.input_hash import InputHash
from stealbench.defenses.misinformation import sample_image_patches
from stealbench.errors import ConfigError
from stealbench.testing import check_defense


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


def _ensemble(digits, **kwargs) -> EnsembleOfDiverseModels:
    train_x, train_y, _, _ = digits
    torch.manual_seed(0)
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                 torch.nn.Linear(64, 10)).eval()
    setup = DefenseSetup(victim=victim, train_x=train_x, train_y=train_y, num_classes=10, input_shape=(1, 8, 8),
                         device=torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    defense = EnsembleOfDiverseModels(**{"members": 3, "epochs": 15, "outlier_data": "patches", **kwargs})
    defense.setup(setup)
    return defense.eval()


@pytest.fixture(scope="module")
def edm(digits):
    return _ensemble(digits)


def _ood(n: int = 300) -> torch.Tensor:
    return sample_image_patches(n, (1, 8, 8), torch.Generator().manual_seed(9))  # fresh patches, unseen in setup


def test_same_input_same_member_and_answer(edm, digits):
    _, _, test_x, _ = digits
    x = torch.cat([test_x[:50], _ood(50)])
    probs = torch.full((len(x), 10), 0.1)
    first, members = edm(x, probs), edm.member_of(x)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(edm(x[order], probs[order]), first[order], atol=0, rtol=0)
    assert torch.equal(edm.member_of(x[order]), members[order])
    single = torch.cat([edm(x[i:i + 1], probs[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(single, first[:5], atol=1e-6, rtol=0)
    # the answer is the chosen member's own probabilities, whatever the victim said
    everyone = edm.all_probs(x)
    torch.testing.assert_close(first, everyone[members, torch.arange(len(x))], atol=1e-6, rtol=0)


def test_different_inputs_spread_across_members(edm, digits):
    _, _, test_x, _ = digits
    counts = torch.bincount(edm.member_of(torch.cat([test_x, _ood()])), minlength=3)
    share = counts.float() / counts.sum()
    assert (share > 0.2).all(), share  # about a third each


def test_hash_ignores_noise_below_half_a_grey_level_and_spreads_near_duplicates():
    h = InputHash(64, torch.Generator().manual_seed(0))
    x = torch.round(torch.rand(200, 1, 8, 8) * 255) / 255
    assert torch.equal(h(x), h((x + 0.4 / 255 * (torch.rand_like(x) * 2 - 1)).clamp(0, 1)))
    bumped = x.clone()
    bumped[:, 0, 0, 0] = (bumped[:, 0, 0, 0] + 1 / 255) % (256 / 255)  # one pixel one level up
    assert (h.choose(x, 5) != h.choose(bumped, 5)).float().mean() > 0.6  # a near-duplicate lands anywhere
    other = InputHash(64, torch.Generator().manual_seed(1))  # another key: another assignment
    assert (h.choose(x, 5) != other.choose(x, 5)).float().mean() > 0.6


def test_members_agree_in_distribution_and_disagree_out_of_it(edm, digits):
    _, _, test_x, test_y = digits
    inside = agreement(edm.all_probs(test_x)).mean().item()
    outside = agreement(edm.all_probs(_ood())).mean().item()
    noise = agreement(edm.all_probs(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(4)))).mean()
    assert inside > 0.85, inside
    assert outside < inside - 0.4 and noise.item() < inside - 0.4, (inside, outside, noise)
    accuracy = (edm(test_x, torch.full((len(test_x), 10), 0.1)).argmax(-1) == test_y).float().mean().item()
    assert accuracy > 0.85, accuracy


def test_the_diversity_term_is_what_makes_them_disagree(edm, digits):
    plain = _ensemble(digits, diversity_weight=0.0)  # an ordinary deep ensemble, same seeds
    assert agreement(plain.all_probs(_ood())).mean() > agreement(edm.all_probs(_ood())).mean() + 0.3


def test_coherence_loss_is_a_smooth_max_of_pairwise_cosines():
    same = torch.softmax(torch.randn(1, 4, 10), -1).expand(3, 4, 10)
    assert coherence_loss(same).item() == pytest.approx(1 + math.log(3), abs=1e-5)  # 3 pairs, cosine 1
    apart = torch.eye(10)[:3, None, :].expand(3, 4, 10)  # one-hot on different classes: cosine 0
    assert coherence_loss(apart).item() == pytest.approx(math.log(3), abs=1e-6)


def test_an_ensemble_of_one_is_refused():
    for n in (1, 0):
        with pytest.raises(ConfigError, match="an ensemble of one") as err:
            EnsembleOfDiverseModels(members=n)
        assert "\n" not in str(err.value)


def test_conforms():
    check_defense("edm", kwargs={"epochs": 3, "members": 3})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_conforms_on_gpu():
    from stealbench.testing.world import TinyWorld

    check_defense("edm", kwargs={"epochs": 3, "members": 3}, world=TinyWorld(device=torch.device("cuda")))
