"""Data sets (loaded once as tensors, leak-free splits) and architectures (built-in and timm)."""

import pytest
import torch

from stealbench.data.base import stratified_split
from stealbench.data.digits import Digits
from stealbench.data.torchvision_sets import MNIST, FashionMNIST
from stealbench.errors import DataNotFoundError, UnknownKeyError
from stealbench.models import build_net


def test_stratified_split_is_a_disjoint_partition_keeping_class_shares():
    labels = torch.arange(10).repeat_interleave(30)
    a, b = stratified_split(labels, 0.2, torch.Generator().manual_seed(0))
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == len(labels)
    assert torch.equal(torch.bincount(labels[a]), torch.full((10,), 6))


def test_digits_splits_are_disjoint_and_recorded():
    data = Digits(pool_fraction=0.5)
    s = data.splits()
    sizes = s.sizes()
    assert sizes == {"victim_train": len(s.victim_y), "defender_holdout": len(s.holdout_y),
                     "attacker_pool": len(s.pool_y), "eval": len(s.eval_y)}
    assert sum(sizes.values()) == 1797
    assert s.victim_x.dtype == torch.float32 and s.victim_x.shape[1:] == (1, 8, 8)
    assert 0.0 <= s.victim_x.min() and s.victim_x.max() <= 1.0
    # no image object is shared between splits: compare the rows themselves
    rows = {split: {tuple(r.tolist()) for r in x.flatten(1)} for split, x in
            (("victim", s.victim_x), ("pool", s.pool_x), ("eval", s.eval_x))}
    dup_in_data = 1797 - len({tuple(r.tolist()) for r in torch.cat([s.victim_x, s.pool_x, s.eval_x]).flatten(1)})
    overlaps = len(rows["victim"] & rows["eval"]) + len(rows["pool"] & rows["eval"])
    assert overlaps <= dup_in_data  # only images that the data set itself holds twice


def test_mnist_loads_from_shared_data_as_tensors(shared_data):
    data = MNIST(root=str(shared_data))
    s = data.splits()
    assert s.sizes() == {"victim_train": 54001, "defender_holdout": 5999, "attacker_pool": 5000, "eval": 5000}
    assert s.pool_x.shape == (5000, 1, 28, 28) and s.pool_x.dtype == torch.float32
    small = FashionMNIST(root=str(shared_data), victim_train_size=1000)
    assert small.splits().sizes()["victim_train"] == 1000


def test_missing_data_root_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data.root"):
        MNIST(root=str(tmp_path)).splits()


@pytest.mark.parametrize("arch,shape", [(a, (1, 8, 8)) for a in ("cnn", "mlp", "resnet18")]
                         + [(a, (1, 28, 28)) for a in ("cnn", "mlp", "lenet5", "resnet18")])
def test_architectures_build_for_small_inputs(arch, shape):
    net = build_net(arch, num_classes=10, input_shape=shape, mean=(0.5,), std=(0.25,))
    out = net(torch.rand(2, *shape))
    assert out.shape == (2, 10)


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UnknownKeyError, match="resnet18"):
        build_net("resnet18_", num_classes=10, input_shape=(1, 8, 8), mean=(0.5,), std=(0.25,))
