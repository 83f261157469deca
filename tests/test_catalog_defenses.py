"""Issue 4 defenses: labels, topk, rounding, noise, misinformation: their defining properties."""

import copy

import pytest
import torch
from torch import nn

from stealbench.defenses.base import DefenseSetup
from stealbench.defenses.labels import LabelsOnly
from stealbench.data.digits import Digits
from stealbench.defenses.misinformation import AdaptiveMisinformation, misinformation_loss, sample_image_patches
from stealbench.defenses.noise import LogitNoise
from stealbench.defenses.rounding import Rounding, round_on_simplex
from stealbench.defenses.topk import TopK
from stealbench.errors import ConfigError
from stealbench.defender.oracle import check_probabilities
from stealbench.pools import check_outliers_disjoint, match_shape
from stealbench.training import TrainSettings, fit


def probs(n=64, k=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g) * scale, -1)


X = torch.rand(64, 1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_releases_one_hot_of_the_argmax():
    p = probs()
    out = LabelsOnly()(X, p)
    check_probabilities(out, p, "labels")
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.sum(-1), torch.ones(len(p)))
    assert torch.equal(out.argmax(-1), p.argmax(-1))


@pytest.mark.parametrize("k", [1, 2, 3, 9, 10, 15])
def test_topk_keeps_the_k_largest_in_order_renormalised(k):
    p = probs()
    out = TopK(k=k)(X, p)
    check_probabilities(out, p, "topk")
    kk = min(k, p.shape[1])
    assert torch.equal((out > 0).sum(-1), torch.full((len(p),), kk))
    top_vals, top_idx = p.topk(kk, dim=-1)
    out_vals, out_idx = out.topk(kk, dim=-1)
    assert torch.equal(out_idx, top_idx)  # same classes, same order
    torch.testing.assert_close(out_vals, top_vals / top_vals.sum(-1, keepdim=True))


def test_topk_rejects_bad_k():
    with pytest.raises(ConfigError, match="defense.k"):
        TopK(k=0)


@pytest.mark.parametrize("decimals", [0, 1, 2, 4])
def test_rounding_stays_on_the_grid_and_the_simplex(decimals):
    p = probs(256)
    out = Rounding(decimals=decimals)(X, p)
    check_probabilities(out, p, "rounding")
    units = out.double() * 10**decimals
    torch.testing.assert_close(units, units.round(), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.double().sum(-1), torch.ones(len(p), dtype=torch.float64), atol=1e-6, rtol=0)
    assert ((out - p).abs() < 10.0**-decimals + 1e-6).all()


def test_rounding_largest_remainder_example():
    p = torch.tensor([[0.334, 0.333, 0.333]])
    assert torch.equal(round_on_simplex(p, 0), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(round_on_simplex(p, 1), torch.tensor([[0.4, 0.3, 0.3]]))
    with pytest.raises(ConfigError, match="decimals"):
        Rounding(decimals=-1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_noise_stays_within_its_logit_budget_and_is_random(norm):
    p = probs(200)
    defense = LogitNoise(eps=0.7, norm=norm, seed=3)
    out = defense(X[:1].expand(200, -1, -1, -1), p)
    check_probabilities(out, p, "noise")
    # log y' = log y + delta - c (c: the softmax normaliser); delta is recovered up to that row constant
    diff = out.double().log() - p.double().log()
    if norm == "l2":
        centred = diff - diff.mean(-1, keepdim=True)  # the smallest norm over all shifts c
        assert (centred.norm(dim=-1) <= 0.7 + 1e-6).all()
    else:
        spread = diff.max(-1).values - diff.min(-1).values
        assert (spread <= 2 * 0.7 + 1e-6).all()
    again = defense(X[:1].expand(200, -1, -1, -1), p)
    assert not torch.equal(out, again), "a randomised defense answers the same input differently"
    assert LogitNoise.randomized
    same_seed = LogitNoise(eps=0.7, norm=norm, seed=3)(X, p[:64])
    assert torch.equal(same_seed, LogitNoise(eps=0.7, norm=norm, seed=3)(X, p[:64]))
    copy.deepcopy(defense)  # the runner copies defenses to measure utility


def _train(net, x, targets, epochs, log_name="defense", loss=None):
    """DefenseSetup.train_model as the runner builds it: the real Lightning trainer (a higher lr keeps epochs few)."""
    return fit(net, x, targets, epochs, TrainSettings(batch_size=64, lr=1e-2), seed=0, log_name=log_name, loss=loss)


@pytest.fixture(scope="module")
def digits_victim():
    s = Digits().splits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    net = _train(net, s.victim_x, nn.functional.one_hot(s.victim_y, 10).float(), 10, log_name="victim")
    for p in net.parameters():
        p.requires_grad_(False)
    return net, s


def _setup(victim, s, **fields):
    """The DefenseSetup the runner hands a defense on digits: victim, its training data, the defender holdout."""
    base = dict(victim=victim, train_x=s.victim_x, train_y=s.victim_y, num_classes=10, input_shape=(1, 8, 8),
                device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), train_model=_train,
                holdout_x=s.holdout_x, holdout_y=s.holdout_y)
    return DefenseSetup(**{**base, **fields})


@pytest.fixture(scope="module")
def misinformation(digits_victim):
    victim, s = digits_victim
    defense = AdaptiveMisinformation(epochs=2, train_size=600, outlier_weight=1.0, nu=50.0)
    defense.setup(_setup(victim, s))
    return defense


def test_misinformation_mixes_in_wrong_answers_for_outliers_only(digits_victim, misinformation):
    victim, s = digits_victim
    defense = copy.deepcopy(misinformation)
    # the misinformation model is trained to be wrong: true-class probability near 0 on images it never saw
    mis = torch.softmax(defense.mis_net(s.holdout_x), -1)
    assert mis.gather(1, s.holdout_y[:, None]).mean() < 0.2
    assert (mis.argmax(-1) == s.holdout_y).float().mean() < 0.2
    with torch.no_grad():
        clean = torch.softmax(victim(s.eval_x), -1)
    benign = copy.deepcopy(defense)(s.eval_x, clean)
    check_probabilities(benign, clean, "misinformation")
    benign_acc = (benign.argmax(-1) == s.eval_y).float().mean()
    victim_acc = (clean.argmax(-1) == s.eval_y).float().mean()
    assert benign_acc >= victim_acc - 0.08  # benign users keep most of the utility
    outliers = sample_image_patches(400, (1, 8, 8), torch.Generator().manual_seed(5))
    with torch.no_grad():
        out_clean = torch.softmax(victim(outliers), -1)
    defense(outliers, out_clean)
    flagged_ood = defense.report()["flagged"]
    fresh = copy.deepcopy(defense)
    fresh.reset()
    fresh(s.eval_x, clean)
    assert flagged_ood > 0.5 > fresh.report()["flagged"]


def test_misinformation_tau_is_calibrated_on_the_holdout_not_on_training_images(digits_victim, misinformation):
    _, s = digits_victim
    rate = misinformation.benign_flag_rate
    on_holdout = torch.quantile(misinformation.score(s.holdout_x).double(), rate)
    on_train = torch.quantile(misinformation.score(s.victim_x).double(), rate)
    assert float(misinformation._threshold) == pytest.approx(float(on_holdout), abs=1e-6)
    # the detector trained on victim_x is more confident there: a train-image tau would flag too few benign users
    assert float(on_train) > float(on_holdout) + 1e-3


def test_misinformation_without_a_holdout_needs_an_explicit_tau(digits_victim):
    victim, s = digits_victim
    with pytest.raises(ConfigError, match=r"defense\.tau null .*holdout.*--defense\.tau"):
        AdaptiveMisinformation(epochs=1, train_size=100).setup(_setup(victim, s, holdout_x=None, holdout_y=None))


def test_misinformation_loss_is_the_papers_objective_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=g) * 3
    y = torch.randint(0, 10, (32,), generator=g)
    onehot = nn.functional.one_hot(y, 10).float()
    p_true = torch.softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(misinformation_loss(logits, onehot), -torch.log1p(-p_true).mean())
    sure = torch.zeros(2, 10)
    sure[:, 3] = 200.0  # p_true = 1 - 1e-87: 1 - p underflows, the loss must not
    sure.requires_grad_(True)
    loss = misinformation_loss(sure, nn.functional.one_hot(torch.tensor([3, 3]), 10).float())
    loss.backward()
    assert torch.isfinite(loss) and loss > 150 and torch.isfinite(sure.grad).all()
    assert (sure.grad[:, 3] > 0).all()  # descending lowers the true class's logit


@pytest.mark.parametrize("objective", ["paper", "derangement"])
def test_misinformation_trains_towards_its_objective(digits_victim, objective):
    victim, s = digits_victim
    calls = {}

    def spy(net, x, targets, epochs, log_name="defense", **options):
        calls[log_name] = (x, targets, options)
        return net.eval()  # what was asked is the point here, not the training

    AdaptiveMisinformation(epochs=1, train_size=200, mis_objective=objective).setup(_setup(victim, s, train_model=spy))
    x, targets, options = calls["defense_misinformation"]
    # each training image's true label, found by matching it in the victim's training set
    match = (x.flatten(1)[:, None, :] == s.victim_x.flatten(1)[None]).all(-1)
    assert match.any(1).all()
    y = s.victim_y[match.float().argmax(1)]
    if objective == "paper":
        assert options["loss"] is misinformation_loss
        assert torch.equal(targets, nn.functional.one_hot(y, 10).float())  # the true class, lowered by the loss
    else:
        assert options.get("loss") is None
        wrong = targets.argmax(-1)
        assert (wrong != y).all()
        mapping = torch.full((10,), -1)
        mapping[y] = wrong
        assert torch.equal(mapping[y], wrong) and torch.equal(mapping.sort().values, torch.arange(10))


def _load_dataset_contract(sets, pool_x, pool_name):
    """A DefenseSetup.load_dataset that keeps the framework's contract: a part as stored, refused if it
    shares images with the attacker's pool (through pools.check_outliers_disjoint)."""
    def load_dataset(key, *, part="train", **options):
        x, y = sets[key][part]
        check_outliers_disjoint(x, pool_x, f"data set {key!r} ({part} part)", pool_name)
        return x, y
    return load_dataset


def test_check_outliers_disjoint_compares_at_the_pools_shape_and_names_both_sets():
    stored = torch.rand(50, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # another set, stored size
    pool_x = match_shape(stored[:30], (1, 8, 8))  # the attacker's pool: the first 30, at the victim's shape
    with pytest.raises(ConfigError, match=r"'other'.*30 of its 50 images .*attacker's pool \(pool_data other\)"):
        check_outliers_disjoint(stored, pool_x, "'other'", "pool_data other")
    check_outliers_disjoint(stored[30:], pool_x, "'other'", "pool_data other")


def test_misinformation_refuses_outliers_from_the_attackers_pool(digits_victim):
    victim, s = digits_victim
    g = torch.Generator().manual_seed(2)
    other = {"train": (torch.rand(300, 3, 16, 16, generator=g), torch.zeros(300, dtype=torch.long)),
             "test": (torch.rand(200, 3, 16, 16, generator=g), torch.zeros(200, dtype=torch.long))}
    # --pool_data other: the attacker queries `other`'s training images, resized to the victim's inputs
    pool_x = match_shape(other["train"][0], (1, 8, 8))
    load = _load_dataset_contract({"other": other}, pool_x, "pool_data 'other'")
    with pytest.raises(ConfigError) as refused:
        AdaptiveMisinformation(outlier_data="other", epochs=1, train_size=100).setup(
            _setup(victim, s, load_dataset=load))
    message = str(refused.value)
    for part in ("defense.outlier_data 'other'", "defense.outlier_part 'train'", "300 of its 300 images",
                 "pool_data 'other'", "--defense.outlier_part test", "--defense.outlier_data patches"):
        assert part in message
    # its test part is not in the pool: accepted, and the detector trains on those outliers
    defense = AdaptiveMisinformation(outlier_data="other", outlier_part="test", epochs=1, train_size=100)
    defense.setup(_setup(victim, s, load_dataset=load))
    assert defense.ood_net is not None and 0 < float(defense._threshold) < 1


def test_misinformation_rejects_bad_options():
    with pytest.raises(ConfigError, match="defense.tau"):
        AdaptiveMisinformation(tau=2.0)
    with pytest.raises(ConfigError, match="defense.detector"):
        AdaptiveMisinformation(detector="maybe")
    with pytest.raises(ConfigError, match="defense.outlier_part must be one of train, test; got 'val'"):
        AdaptiveMisinformation(outlier_part="val")
    with pytest.raises(ConfigError, match="defense.mis_objective must be one of paper, derangement"):
        AdaptiveMisinformation(mis_objective="swap")
