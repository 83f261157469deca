"""PRADA: Protecting against DNN model stealing attacks (Juuti, Szyller, Marchal & Asokan, EuroS&P 2019).

PRADA watches the stream of queries. For each query x with predicted class c it takes the minimum L2 distance
d_min from x to the *growing set* G_c of earlier queries of class c and adds d_min to the distance set D. If
d_min exceeds the class threshold T_c, x joins G_c and ``T_c = max(T_c, mean(D_Gc) - std(D_Gc))`` over the
distances D_Gc that admitted members of G_c. The first query of class c starts G_c and, as in the authors'
implementation, D_Gc with a 0 (its distance to itself), so the first admission sets T_c = max(0, d/2 - d/2) = 0 and
not d; T_c starts at 0 and that first 0 stays in D_Gc (never in D). Natural queries give roughly normally distributed distances;
synthetic attack queries (small perturbations of earlier ones, as in JBDA) do not. Once D holds more than
``min_distances`` values, the Shapiro-Wilk statistic W of D (outliers beyond ``outlier_std`` standard deviations
removed) is tested: ``W < delta`` raises the alarm. From the alarming query on, the defense changes its answers
(``response``) and :meth:`report` says at which query the alarm was raised.

The queries arrive in batches. Distances to the growing sets and between the queries of a batch are computed as
whole matrices; the admission decisions, which depend on each other in query order, are a scan over scalars.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from stealbench.defenses import Defense, DefenseSetup
from stealbench.errors import ConfigError


def shapiro_w(values: np.ndarray) -> float:
    """Shapiro-Wilk W statistic (scipy), 1.0 for degenerate samples (fewer than 3 values or all equal)."""
    from scipy.stats import shapiro

    if len(values) < 3 or np.ptp(values) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "p-value may not be accurate for N > 5000": we use W, not p
        return float(shapiro(values).statistic)


class PRADA(Defense):
    """PRADA (Juuti et al. 2019): flags a stream whose query distances are not normal, then alters its answers."""

    stateful = True

    def __init__(
        self,
        delta: float = 0.95,
        min_distances: int = 100,
        check_every: int = 1,
        outlier_std: float = 3.0,
        response: Literal["random", "uniform", "none"] = "random",
        seed: int = 0,
    ) -> None:
        """
        Args:
            delta: detection threshold on the Shapiro-Wilk statistic W (alarm when W < delta; the paper
                tunes it per model, 0.9-0.96).
            min_distances: test only once the distance set D holds more than this many values (paper: 100).
            check_every: run the normality test after every n-th query (1: after every query, as the paper).
            outlier_std: before the test, drop distances further than this many standard deviations from the
                mean (0 keeps all).
            response: the answers after the alarm: `random` (a one-hot vector of a random class), `uniform`
                (1/K for every class) or `none` (detect only, keep answering truthfully).
            seed: seeds the random labels of the `random` response.
        """
        super().__init__()
        if not 0 < delta < 1:
            raise ConfigError(f"defense.delta must lie in (0, 1), got {delta}")
        if min_distances < 3:
            raise ConfigError(f"defense.min_distances must be >= 3, got {min_distances}")
        if check_every < 1:
            raise ConfigError(f"defense.check_every must be >= 1, got {check_every}")
        if outlier_std < 0:
            raise ConfigError(f"defense.outlier_std must be >= 0, got {outlier_std}")
        if response not in ("random", "uniform", "none"):
            raise ConfigError(f"defense.response must be random, uniform or none, got {response!r}")
        self.delta = float(delta)
        self.min_distances = int(min_distances)
        self.check_every = int(check_every)
        self.outlier_std = float(outlier_std)
        self.response = response
        self.seed = int(seed)
        self.randomized = response == "random"
        self.reset()

    def setup(self, context: DefenseSetup) -> None:
        self.reset()

    def reset(self) -> None:
        self._queries = 0  # queries seen
        self._members: Tensor | None = None  # growing sets, all classes: (n, d) float64
        self._member_class: Tensor | None = None  # (n,)
        self._threshold: dict[int, float] = {}  # T_c
        self._admitted: dict[int, list[float]] = {}  # per class: count, sum, sum of squares of D_Gc (with the 0)
        self._distances = np.empty(1024)  # D, the first self._n_distances entries
        self._n_distances = 0
        self._alarm_query: int | None = None
        self._last_w = 1.0
        self._generator = torch.Generator().manual_seed(self.seed)

    # -- the stream ------------------------------------------------------------------------------------------
    def _push_distance(self, d: float) -> None:
        if self._n_distances == len(self._distances):
            self._distances = np.concatenate([self._distances, np.empty(len(self._distances))])
        self._distances[self._n_distances] = d
        self._n_distances += 1

    def _test(self) -> float:
        d = self._distances[: self._n_distances]
        if self.outlier_std > 0:
            mean, std = d.mean(), d.std()
            if std > 0:
                d = d[np.abs(d - mean) <= self.outlier_std * std]
        return shapiro_w(d)

    def observe(self, x: Tensor, classes: Tensor) -> np.ndarray:
        """Feed a batch of queries; returns, per query, whether the alarm was up when it was answered."""
        flat = x.detach().flatten(1).double().cpu()
        classes = classes.detach().cpu()
        n = len(flat)
        if self._members is not None and len(self._members):
            to_members = torch.cdist(flat, self._members)
            to_members.masked_fill_(classes[:, None] != self._member_class[None, :], math.inf)
            nearest = to_members.min(1).values.numpy().copy()
        else:
            nearest = np.full(n, math.inf)
        within = torch.cdist(flat, flat)
        within.masked_fill_(classes[:, None] != classes[None, :], math.inf)
        within = within.numpy()
        cls = classes.numpy()
        admitted = np.zeros(n, dtype=bool)
        flagged = np.zeros(n, dtype=bool)
        for i in range(n):  # inherently sequential: each admission changes the distances of later queries
            c = int(cls[i])
            d_min = nearest[i]
            admit = not math.isfinite(d_min)
            if admit:  # the first query of its class starts G_c, and D_Gc with the 0 the authors seed it with
                self._threshold[c] = 0.0
                self._admitted[c] = [1.0, 0.0, 0.0]
            else:
                self._push_distance(d_min)
                if d_min > self._threshold[c]:
                    admit = True
                    stats = self._admitted[c]
                    stats[0] += 1
                    stats[1] += d_min
                    stats[2] += d_min * d_min
                    mean = stats[1] / stats[0]
                    std = math.sqrt(max(stats[2] / stats[0] - mean * mean, 0.0))
                    self._threshold[c] = max(self._threshold[c], mean - std)
            if admit:
                admitted[i] = True
                np.minimum(nearest, within[:, i], out=nearest)  # later queries of class c now see x
            query_number = self._queries + i + 1
            if (self._alarm_query is None and self._n_distances > self.min_distances
                    and query_number % self.check_every == 0):
                self._last_w = self._test()
                if self._last_w < self.delta:
                    self._alarm_query = query_number
            flagged[i] = self._alarm_query is not None
        self._queries += n
        new = flat[torch.from_numpy(admitted)]
        new_class = classes[torch.from_numpy(admitted)]
        if self._members is None:
            self._members, self._member_class = new, new_class
        else:
            self._members = torch.cat([self._members, new])
            self._member_class = torch.cat([self._member_class, new_class])
        return flagged

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        flagged = torch.from_numpy(self.observe(x, probs.argmax(-1))).to(probs.device)
        if self.response == "none" or not flagged.any():
            return probs.clone()
        k = probs.shape[-1]
        if self.response == "uniform":
            altered = torch.full_like(probs, 1.0 / k)
        else:
            labels = torch.randint(k, (len(probs),), generator=self._generator).to(probs.device)
            altered = torch.nn.functional.one_hot(labels, k).to(probs.dtype)
        return torch.where(flagged[:, None], altered, probs)

    # -- results ---------------------------------------------------------------------------------------------
    @property
    def alarm_query(self) -> int | None:
        """The 1-based number of the query at which the alarm was raised, or None."""
        return self._alarm_query

    def state_size(self) -> int:
        """Queries the defense stores: the growing sets' images (D adds one float per query besides)."""
        return 0 if self._members is None else int(len(self._members))

    def report(self) -> dict[str, float]:
        out = {
            "alarm": float(self._alarm_query is not None),
            "queries_seen": float(self._queries),
            "shapiro_w": float(self._last_w),
            "growing_set": float(0 if self._members is None else len(self._members)),
        }
        if self._alarm_query is not None:
            out["alarm_query"] = float(self._alarm_query)
        return out
