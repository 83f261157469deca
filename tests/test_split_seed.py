"""Each seed of a grid gets its own split (a null --data.split_seed follows --seed); an explicit one stays fixed."""

import pytest
import torch

from stealbench.data.digits import Digits


def _eval_rows(data) -> torch.Tensor:
    return data.splits().eval_x.flatten(1)


def test_null_split_seed_follows_the_run_seed():
    a, b, again = Digits(), Digits(), Digits()
    a.follow_run_seed(1)
    b.follow_run_seed(2)
    again.follow_run_seed(1)
    assert a.split_seed == 1 and b.split_seed == 2
    assert not torch.equal(_eval_rows(a), _eval_rows(b))  # different seeds, different evaluation sets
    assert torch.equal(_eval_rows(a), _eval_rows(again))  # same seed, same split: pairs stay paired
    assert a.config()["split_seed"] == 1  # recorded as resolved (victim cache key, results.json)


def test_explicit_split_seed_is_kept_and_seed_zero_is_unchanged():
    fixed = Digits(split_seed=7)
    fixed.follow_run_seed(3)
    assert fixed.split_seed == 7
    zero, standalone = Digits(), Digits()
    zero.follow_run_seed(0)
    assert torch.equal(_eval_rows(zero), _eval_rows(standalone))  # seed 0 keeps the split runs had before


def test_follow_after_the_splits_were_drawn_is_a_bug():
    data = Digits()
    data.splits()
    with pytest.raises(RuntimeError):
        data.follow_run_seed(4)
