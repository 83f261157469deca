"""D-DAE's two small networks on answer vectors: the defense detector and the restorer (defended -> clean).

Both read an answer through :func:`features`: its probabilities sorted in descending order, with their
log-probabilities. Sorting makes them class-agnostic (a defense family acts alike on every class, and the shadow
victims may have been trained on another data set's classes); the restorer predicts the clean probability at each
sorted position of the defended answer and :func:`restore` puts the values back in class order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: log-probabilities are clipped here (rounding and top-k release exact zeros)
LOG_FLOOR = -30.0


def features(released: Tensor) -> tuple[Tensor, Tensor]:
    """(features (n, 2K), order (n, K)): sorted probabilities and log-probabilities, and the sort order."""
    probs = released.float().clamp_min(0)
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
    sorted_probs, order = probs.sort(-1, descending=True)
    logs = sorted_probs.clamp_min(1e-30).log().clamp_min(LOG_FLOOR)
    return torch.cat([sorted_probs, logs / -LOG_FLOOR], -1), order


def mlp(inputs: int, outputs: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


class Restorer(nn.Module):
    """Clean-answer estimate from a defended one: the defended log-probabilities plus a learned correction,
    position by position in the defended answer's sorted order."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(2 * num_classes, num_classes, hidden)

    def forward(self, feats: Tensor) -> Tensor:
        k = feats.shape[-1] // 2
        return feats[:, k:] * -LOG_FLOOR + self.net(feats)  # logits in sorted positions


def _batches(n: int, batch_size: int, generator: torch.Generator):
    return torch.randperm(n, generator=generator).split(batch_size)


def fit_vectors(net: nn.Module, x: Tensor, loss_fn, targets: Tensor, *, epochs: int, lr: float,
                generator: torch.Generator, batch_size: int = 256) -> nn.Module:
    """Adam on (x, targets) for `epochs` (plain PyTorch: the data are a few thousand short vectors)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in _batches(len(x), batch_size, generator):
                loss = loss_fn(net(x[idx]), targets[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


def train_detector(answers: Tensor, labels: Tensor, classes: int, *, hidden: int, epochs: int, lr: float,
                   generator: torch.Generator) -> nn.Module:
    """A classifier of which defense (class 0: none) released each answer."""
    feats, _ = features(answers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        net = mlp(feats.shape[1], classes, hidden)
    return fit_vectors(net, feats, nn.functional.cross_entropy, labels, epochs=epochs, lr=lr, generator=generator)


def restorer_loss(logits: Tensor, clean_sorted: Tensor) -> Tensor:
    """L1 between the estimate and the clean answer (what `label_mode/recovery_l1` scores) plus their KL."""
    probs = torch.softmax(logits, -1)
    kl = (clean_sorted * (clean_sorted.clamp_min(1e-30).log() - torch.log_softmax(logits, -1))).sum(-1)
    return ((probs - clean_sorted).abs().sum(-1) + kl).mean()


def train_restorer(defended: Tensor, clean: Tensor, *, hidden: int, epochs: int, lr: float,
                   generator: torch.Generator) -> Restorer:
    """A restorer trained on pairs (defended shadow answer -> clean shadow answer)."""
    feats, order = features(defended)
    clean_sorted = clean.float().gather(1, order)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        net = Restorer(clean.shape[1], hidden)
    return fit_vectors(net, feats, restorer_loss, clean_sorted, epochs=epochs, lr=lr, generator=generator)


@torch.no_grad()
def detect(detector: nn.Module, answers: Tensor) -> Tensor:
    """Posterior (n, classes) of each answer's defense."""
    feats, _ = features(answers)
    return torch.softmax(detector(feats), -1)


@torch.no_grad()
def restore(restorer: Restorer, released: Tensor) -> Tensor:
    """The restorer's clean-answer estimate, in class order."""
    feats, order = features(released)
    sorted_probs = torch.softmax(restorer(feats), -1)
    return torch.empty_like(sorted_probs).scatter_(1, order, sorted_probs)


__all__ = ["Restorer", "detect", "features", "restore", "train_detector", "train_restorer"]
