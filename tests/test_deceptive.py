"""Reverse sigmoid: golden vectors (ART's unit test, DESIGN §5) and its argmax property."""

import pytest
import torch

from stealbench.defenses.deceptive import DeceptivePerturbation, reverse_sigmoid
from stealbench.errors import ConfigError

Y = [0.12109935, 0.0498215, 0.0993958, 0.06410096, 0.11366928, 0.04645343, 0.06419807, 0.30685693, 0.07616714,
     0.05823757]
GOLDEN = {
    (1.0, 0.1): [0.10733664, 0.07743666, 0.09712707, 0.08230411, 0.10377649, 0.0764482, 0.08234023, 0.20600921,
                 0.08703023, 0.08019119],
    (0.75, 0.1): [0.1097239, 0.07264659, 0.09752058, 0.07914664, 0.10549247, 0.07124537, 0.07919333, 0.22350204,
                  0.08514594, 0.07638316],
    (1.0, 0.5): [0.09699764, 0.10062696, 0.09689676, 0.09873781, 0.0968849, 0.10121989, 0.0987279, 0.11275949,
                 0.09774373, 0.09940492],
}
BINARY = {(1.0, 0.1): 0.52711743, (0.75, 0.1): 0.5278717, (1.0, 0.5): 0.51505363}


@pytest.mark.parametrize("beta,gamma", list(GOLDEN))
def test_golden_vectors(beta, gamma):
    released = DeceptivePerturbation(beta, gamma)(None, torch.tensor([Y], dtype=torch.float32))
    torch.testing.assert_close(released, torch.tensor([GOLDEN[beta, gamma]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta,gamma", list(BINARY))
def test_golden_binary(beta, gamma):
    released = reverse_sigmoid(torch.tensor([[0.5301345]], dtype=torch.float64), beta, gamma)
    assert released.shape == (1, 1)
    assert abs(released.item() - BINARY[beta, gamma]) < 1e-6


def test_output_on_simplex_with_input_dtype_and_shape():
    probs = torch.softmax(torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 4, -1)
    for dtype in (torch.float32, torch.float64):
        out = reverse_sigmoid(probs.to(dtype), 1.0, 0.3)
        assert out.dtype == dtype and out.shape == probs.shape
        assert (out >= 0).all()
        torch.testing.assert_close(out.sum(-1), torch.ones(64, dtype=dtype))


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.1), (0.5, 0.5), (1.0, 0.99), (0.2, 0.9)])
def test_argmax_kept_when_top_probability_exceeds_half(beta, gamma):
    g = torch.Generator().manual_seed(1)
    # float64: near beta = gamma = 1 the released values of the top-1 and the rest differ by less than
    # float32 resolution, so a float32 answer can tie (the property itself holds exactly)
    probs = torch.softmax(torch.randn(4000, 10, generator=g, dtype=torch.float64) * 6, -1)
    confident = probs[probs.max(-1).values > 0.5]
    assert len(confident) > 1000
    out = reverse_sigmoid(confident, beta, gamma)
    assert torch.equal(out.argmax(-1), confident.argmax(-1))


def test_beta_and_gamma_one_release_the_uniform_vector():
    # y - (sigmoid(logit y) - 1/2) = 1/2 for every class: the boundary case keeps the argmax only as a tie
    probs = torch.softmax(torch.randn(5, 10, generator=torch.Generator().manual_seed(0)) * 5, -1)
    torch.testing.assert_close(reverse_sigmoid(probs, 1.0, 1.0), torch.full((5, 10), 0.1))


def test_argmax_can_flip_below_half():
    g = torch.Generator().manual_seed(2)
    low = torch.softmax(torch.randn(5000, 10, generator=g), -1)
    low = low[low.max(-1).values < 0.5]
    flips = (reverse_sigmoid(low, 1.0, 0.5).argmax(-1) != low.argmax(-1)).sum().item()
    assert flips > 0, "below 1/2 the argmax is not guaranteed; some random inputs should flip"


def test_rejects_non_positive_parameters():
    with pytest.raises(ConfigError, match="beta"):
        DeceptivePerturbation(beta=0.0)
    with pytest.raises(ConfigError, match="gamma"):
        DeceptivePerturbation(gamma=-1.0)
