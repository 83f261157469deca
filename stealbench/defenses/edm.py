"""EDM, an Ensemble of Diverse Models (Kariyappa, Prakash & Qureshi, "Protecting DNNs from Theft using an Ensemble
of Diverse Models", ICLR 2021).

What the paper does: N models are trained jointly to be accurate on the victim's task (cross-entropy on the
in-distribution training data) and to disagree out of distribution (a diversity term on out-of-distribution
inputs). Each query is answered by one member, chosen by a hash of the input: in distribution the members agree, so
benign users see an accurate model; on the attacker's out-of-distribution queries the answers jump between members
that disagree, so the function the attacker sees is highly discontinuous and its clone generalises poorly. The
same input always gets the same member (an attacker cannot average repeated queries away).

Here, in `setup()` (the defender's side): `members` copies of the victim's network (re-initialised, each from its
own seed drawn from the defense's generator; `from_victim: true` starts them from the victim's weights instead)
train for `epochs` epochs with Adam (`lr`) on the victim's training images (`train_size` of them) and their labels,
each batch paired with a batch of outliers (`outlier_weight` per image; loaded as the misinformation defense loads
them: `outlier_data` auto / patches / a data-set key, never the attacker's pool). The loss, as this
implementation reads the paper (its Eqn. 3):

    L = mean_i CE(f_i(x_in), y)  +  diversity_weight * mean_{x_out} log sum_{i<j} exp(cos(f_i(x_out), f_j(x_out)))

f_i(x) the member's probability vector; the log-sum-exp is a smooth maximum of the pairwise cosine similarities,
the paper's "coherence". A keyed universal hash of the quantised pixels (`input_hash.py`, `levels` grey levels)
picks the member per query: deterministic (`stateful = False`, `randomized = False`) and batched. The victim's own
answer is not used: the chosen member's probabilities are released.

Not verified against the paper or code (neither could be read here; no official code was found): the exact form of
the diversity term (cosine similarity of output probabilities, its log-sum-exp smoothing, the pairwise sum), the
weight lambda (`diversity_weight`, default 1.0 is a guess), the optimiser and schedule, N = 5 and the paper's OOD
training data (here the misinformation defense's outliers). The hash in the paper is an unspecified hash of the
input; here it is keyed with the defender's secret so an attacker cannot predict which member answers. The members
train in a plain PyTorch loop on the defense's device with the defense's generator (one joint loss over all members
does not fit `DefenseSetup.train_model`, which trains one net on per-row targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import hookimpl
from ..errors import check_options
from .base import Defense, DefenseSetup
from .input_hash import InputHash
from .misinformation import freeze, load_outliers, trainable_copy


def coherence_loss(probs: Tensor) -> Tensor:
    """Smooth maximum (log-sum-exp) over member pairs of the cosine similarity of their outputs, batch mean.

    `probs`: (N, B, K), N >= 2 members' probabilities on the same B inputs.
    """
    unit = F.normalize(probs.float(), dim=-1)
    sims = torch.einsum("ibk,jbk->bij", unit, unit)  # (B, N, N)
    i, j = torch.triu_indices(len(probs), len(probs), offset=1)
    return torch.logsumexp(sims[:, i, j], dim=-1).mean()


def agreement(probs: Tensor) -> Tensor:
    """Share of member pairs whose top-1 agree, per input: (N, B, K) -> (B,)."""
    top = probs.argmax(-1)  # (N, B)
    i, j = torch.triu_indices(len(probs), len(probs), offset=1)
    return (top[i] == top[j]).float().mean(0)


class EnsembleOfDiverseModels(Defense):
    """EDM (Kariyappa et al. 2021): members agree in distribution, disagree out of it; a hash of x picks one."""

    def __init__(self, members: int = 5, epochs: int = 20, diversity_weight: float = 1.0, lr: float = 3e-3,
                 batch_size: int = 128, train_size: int | None = 10000, outlier_data: str = "auto",
                 outlier_part: str = "train", outlier_root: str | None = "../shared/data",
                 outlier_weight: float = 1.0, from_victim: bool = False, levels: int = 256) -> None:
        """
        Args:
            members: ensemble size N (>= 2).
            epochs: joint training epochs over the in-distribution images.
            diversity_weight: weight lambda of the out-of-distribution coherence term.
            lr: Adam learning rate.
            batch_size: in-distribution images per step (each paired with outlier_weight as many outliers).
            train_size: victim training images used (null: all of them).
            outlier_data: `auto`, `patches` (scikit-learn sample-photo patches) or a registered data-set key.
            outlier_part: which part of a data-set key to use, `train` or `test`.
            outlier_root: where file-based outlier data sets live (null: not passed).
            outlier_weight: outliers per in-distribution image.
            from_victim: start every member from the victim's weights (else each from its own initialisation).
            levels: grey levels the input hash quantises pixels to.
        """
        super().__init__()
        checks = [
            (members >= 2, f"defense.members must be >= 2 (an ensemble of one has nothing to disagree with), "
                           f"got {members}"),
            (epochs >= 1, f"defense.epochs must be >= 1, got {epochs}"),
            (diversity_weight >= 0, f"defense.diversity_weight must be >= 0, got {diversity_weight}"),
            (lr > 0, f"defense.lr must be > 0, got {lr}"),
            (batch_size >= 1, f"defense.batch_size must be >= 1, got {batch_size}"),
            (train_size is None or train_size >= 10, f"defense.train_size must be >= 10 or null, got {train_size}"),
            (outlier_part in ("train", "test"),
             f"defense.outlier_part must be one of train, test; got {outlier_part!r}"),
            (outlier_weight > 0, f"defense.outlier_weight must be > 0, got {outlier_weight}"),
            (2 <= levels <= 2**15, f"defense.levels must be in [2, 32768], got {levels}"),
        ]
        check_options(checks)
        self.members = int(members)
        self.epochs = int(epochs)
        self.diversity_weight = float(diversity_weight)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.train_size = train_size
        self.outlier_data = outlier_data
        self.outlier_part = outlier_part
        self.outlier_root = outlier_root
        self.outlier_weight = float(outlier_weight)
        self.from_victim = from_victim
        self.levels = int(levels)
        self.nets = nn.ModuleList()
        self._hash: InputHash | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def setup(self, context: DefenseSetup) -> None:
        g, device = context.generator, context.device
        chosen = torch.randperm(len(context.train_x), generator=g)
        if self.train_size is not None:
            chosen = chosen[: self.train_size]
        x, y = context.train_x[chosen], context.train_y[chosen]
        ood = load_outliers(context, max(2, int(len(x) * self.outlier_weight)), self.outlier_data,
                            self.outlier_part, self.outlier_root)
        nets = nn.ModuleList(trainable_copy(context.victim, self.from_victim, g) for _ in range(self.members))
        self.nets = self.train_members(nets.to(device), x, y, ood, g, device)
        self._hash = InputHash(x[0].numel(), g, self.levels)
        self.to(device)

    def train_members(self, nets: nn.ModuleList, x: Tensor, y: Tensor, ood: Tensor, g: torch.Generator,
                      device: torch.device) -> nn.ModuleList:
        opt = torch.optim.Adam(nets.parameters(), lr=self.lr)
        per_step = max(1, round(self.batch_size * self.outlier_weight))
        nets.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=g).split(self.batch_size):
                xb, yb = x[idx].to(device), y[idx].to(device)
                ob = ood[torch.randint(len(ood), (per_step,), generator=g)].to(device)
                logits = torch.stack([net(torch.cat([xb, ob])).float() for net in nets])  # (N, B + Bo, K)
                fit = F.cross_entropy(logits[:, : len(xb)].flatten(0, 1), yb.repeat(len(nets)))
                diverse = coherence_loss(torch.softmax(logits[:, len(xb):], -1))
                loss = fit + self.diversity_weight * diverse
                opt.zero_grad()
                loss.backward()
                opt.step()
        for net in nets:
            freeze(net)
        return nets

    # -- answering ------------------------------------------------------------------------------------------------
    def member_of(self, x: Tensor) -> Tensor:
        """Which member answers each query: a keyed hash of the quantised image."""
        if self._hash is None:
            raise RuntimeError("edm defense used before setup()")
        return self._hash.choose(x, len(self.nets))

    @torch.no_grad()
    def all_probs(self, x: Tensor) -> Tensor:
        """Every member's probabilities, (N, B, K)."""
        return torch.stack([torch.softmax(net(x).float(), -1) for net in self.nets])

    @torch.no_grad()
    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        which = self.member_of(x).to(probs.device)
        out = torch.empty_like(probs)
        for m, net in enumerate(self.nets):  # a loop over members, not samples
            rows = (which == m).nonzero().flatten()
            if len(rows):
                out[rows] = torch.softmax(net(x[rows]).double(), -1).to(probs.dtype)
        return out


@hookimpl
def register_defenses(register):
    register("edm", EnsembleOfDiverseModels)
