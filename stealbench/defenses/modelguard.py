"""ModelGuard (Tang, Dong, Tang & Wang, "ModelGuard: Information-Theoretic Defense Against Model Extraction
Attacks", USENIX Security 2024): ModelGuard-W (`modelguard-w`) and ModelGuard-S (`modelguard-s`).

What the paper and its reference code (github.com/Yoruko-Tang/ModelGuard, `defenses/victim/mld.py` and
`defenses/victim/quantize.py`) do, and where this module differs. Every difference is a named option; the defaults
are the reference's behaviour except where marked "deviation".

ModelGuard-W (the reference's `MLD` blackbox). Per query, with y the victim's probabilities and t = argmax y::

    y' = argmin_{y'} <log(y + 1e-6), y'>   s.t.  y' in [0, 1]^K,  sum y' = 1,  ||y' - y||_1 <= epsilon,
                                                y'_t >= y'_j + margin  for every j != t        (margin 1e-4)

a linear programme (the misinformation w.r.t. y is maximised within an L1 ball). The reference builds one PuLP
problem per batch (CBC) with an auxiliary z >= |y' - y|. Here:

- the same LP, written with the split y' - y = u - v (u, v >= 0, bounds u <= 1 - y and v <= y keep y' in [0, 1]),
  so each row has 2K variables, one equality and K inequalities (L1 budget + K-1 margins). The rows of a chunk
  (`chunk` rows) are stacked into one block-diagonal sparse LP (scipy.sparse, built without a Python loop over
  rows) and solved by HiGHS (`scipy.optimize.linprog(method="highs")`). bench/modelguard_lp_speed.py measures
  batched vs one linprog per row.
- `log_offset` (1e-6, the reference's) is the offset inside the log: log 0 never occurs.
- `tie_break` (deviation; 1e-6, 0 disables): adds tie_break * j to the cost of class j. Where classes have equal
  costs (a one-hot or a uniform row: many exact zeros), the LP's optimum is not unique and a solver may pick a
  different vertex depending on what else is in the batch; the tiny cost makes the optimum unique (mass goes to
  the lowest-index class among equals), so an answer does not depend on its batch. It changes the objective by at
  most tie_break * K * epsilon.
- y is renormalised in float64 before solving; the solution is clipped to [0, 1] and renormalised (HiGHS meets
  constraints to ~1e-9), and returned in the input's dtype and device.
- Ties in y: t is the first index of the maximum (torch.argmax), as in the reference (np.argmax). The margin
  constraint then makes t the strict top-1 of y' (by `margin`, far above solver tolerance), so
  `preserves_argmax = True`. A margin is always feasible when epsilon >= 2 * margin (lifting t above K tied
  classes costs an L1 of at most 2 * margin * (K-1)/K), so smaller epsilons are refused. An LP that still fails
  raises a one-line error naming the HiGHS status.
- Not implemented: the reference's `batch_constraint` (one L1 budget shared by the whole batch; off in its scripts)
  and its `ydist` l2/kl choices (its LP is L1-only anyway).

ModelGuard-S (the reference's `incremental_kmeans` quantizer with `ordered_quantization: 1`, `optim: 0`,
`ydist: l1`, over the undefended blackbox). Per predicted class a list of centroids; queries are answered in
order: the answer is the first centroid (in insertion order) of the query's predicted class within L1 distance
epsilon, else the answer itself becomes that class's newest centroid and is released unchanged. Here:

- the distances of a whole batch to every centroid are one `cdist`; only the queries that match no existing
  centroid are resolved in order, one step per new centroid (the sequential semantics), each step vectorised over
  the rest of the batch.
- Seeding (`init`): `kmeans` (default) seeds each class's list in `setup()` from the victim's own outputs on its
  training images, with the reference's `cluster()`: start from the mean, run k-means (L1 assignment, mean
  update, stop when no centroid moves by more than `tol` in L2, or after `max_iter`; empty clusters dropped), and
  while some output lies farther than epsilon from every centroid add the farthest as a centroid and repeat.
  `init_centroids: k` (deviation) instead runs plain k-means with k centroids per class, started from k random
  outputs (the defense's generator). `init: empty` starts with no centroids: what the reference's released scripts
  actually do, since they pass no `trainingset_name` to the quantizer (its seeding code path is unused there).
- Guessed / deviation: the reference seeds from the `train=False` split of the victim's data set (its test set);
  that split is this framework's evaluation set, which no component may see, so the victim's training images
  (`init_size` of them, null: all) are used. The reference groups seeding outputs by their true label
  (`seed_groups: label`, the default); `seed_groups: predicted` groups them by the victim's argmax instead.
- Because a centroid within epsilon may have another argmax (and label-grouped seeds may too),
  `preserves_argmax = False`. `frozen: true` (the reference's `frozen`) never adds centroids: the first centroid
  within epsilon, else the nearest centroid of the class (the query itself where the class has none).
- Not implemented: the reference's non-ordered mode (online re-clustering with a label buffer) and `optim: 1`
  (Dirichlet sampling of new centroids); both are off in its scripts.

`report()` gives `centroids` (the state size, also `state_size()`) and `new_centroids` (added while answering).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .. import hookimpl
from ..errors import check_options
from .base import Defense, DefenseSetup

_HIGHS_STATUS = {1: "iteration limit reached", 2: "infeasible", 3: "unbounded", 4: "numerical difficulties"}


# ---------------------------------------------------------------------------------------------------------------
# ModelGuard-W: the LP
# ---------------------------------------------------------------------------------------------------------------
def _block_lp(y: np.ndarray, top: np.ndarray, epsilon: float, margin: float, log_offset: float,
              tie_break: float):
    """The stacked LP of rows `y` (n, K): (c, A_ub, b_ub, A_eq, b_eq, bounds) over x = [u (n*K), v (n*K)]."""
    import scipy.sparse as sp

    n, k = y.shape
    nk = n * k
    cost = np.log(y + log_offset) + tie_break * np.arange(k)[None, :]
    c = np.concatenate([cost.ravel(), -cost.ravel()])
    u_idx = np.arange(nk).reshape(n, k)
    v_idx = u_idx + nk
    rows = np.arange(n)
    # equality: sum_j u_ij - v_ij = 0 (y' stays on the simplex)
    a_eq = sp.csr_matrix((np.concatenate([np.ones(nk), -np.ones(nk)]),
                          (np.concatenate([np.repeat(rows, k)] * 2), np.concatenate([u_idx.ravel(), v_idx.ravel()]))),
                         shape=(n, 2 * nk))
    # L1 budget: sum_j u_ij + v_ij <= epsilon (rows 0..n-1)
    l1_r = np.concatenate([np.repeat(rows, k)] * 2)
    l1_c = np.concatenate([u_idx.ravel(), v_idx.ravel()])
    l1_v = np.ones(2 * nk)
    # margins: (u_ij - v_ij) - (u_it - v_it) <= y_it - y_ij - margin for j != t (rows n..n + n(K-1) - 1)
    others = np.ones((n, k), dtype=bool)
    others[rows, top] = False
    oi, oj = np.nonzero(others)  # row-major: (K-1) per row
    m_rows = n + np.arange(len(oi))
    t_u, t_v = u_idx[oi, top[oi]], v_idx[oi, top[oi]]
    m_r = np.concatenate([m_rows] * 4)
    m_c = np.concatenate([u_idx[oi, oj], v_idx[oi, oj], t_u, t_v])
    m_v = np.concatenate([np.ones(len(oi)), -np.ones(len(oi)), -np.ones(len(oi)), np.ones(len(oi))])
    a_ub = sp.csr_matrix((np.concatenate([l1_v, m_v]), (np.concatenate([l1_r, m_r]), np.concatenate([l1_c, m_c]))),
                         shape=(n + len(oi), 2 * nk))
    b_ub = np.concatenate([np.full(n, epsilon), y[rows, top][oi] - y[oi, oj] - margin])
    bounds = np.stack([np.zeros(2 * nk), np.concatenate([(1.0 - y).ravel(), y.ravel()])], axis=1)
    return c, a_ub, b_ub, a_eq, np.zeros(n), bounds


def modelguard_w_solve(y: np.ndarray, top: np.ndarray, epsilon: float, margin: float = 1e-4,
                       log_offset: float = 1e-6, tie_break: float = 1e-6) -> np.ndarray:
    """Solve the rows' LPs as one block-diagonal LP (HiGHS); returns y' (n, K) float64, rows on the simplex."""
    from scipy.optimize import linprog

    n, k = y.shape
    if n == 0:
        return y.copy()
    c, a_ub, b_ub, a_eq, b_eq, bounds = _block_lp(y, top, epsilon, margin, log_offset, tie_break)
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"ModelGuard-W: HiGHS could not solve the LP of {n} rows "
                           f"({_HIGHS_STATUS.get(res.status, res.status)}: {res.message})")
    u, v = res.x[: n * k].reshape(n, k), res.x[n * k:].reshape(n, k)
    out = np.clip(y + u - v, 0.0, 1.0)
    return out / out.sum(1, keepdims=True)


class ModelGuardW(Defense):
    """ModelGuard-W: per query, the most misinforming answer (min <log y, y'>) within an L1 ball, top-1 kept."""

    preserves_argmax = True  # the margin constraint makes the victim's (first) argmax the strict top-1

    def __init__(self, epsilon: float = 1.0, margin: float = 1e-4, log_offset: float = 1e-6,
                 tie_break: float = 1e-6, chunk: int = 128) -> None:
        """
        Args:
            epsilon: L1 radius of the ball around y (the reference's scripts: 1.0); must be >= 2 * margin.
            margin: y'[top] >= y'[j] + margin for every other class j (reference: 1e-4); 0 allows ties.
            log_offset: the objective's log(y + log_offset) (reference: 1e-6).
            tie_break: tie_break * j added to class j's cost so that the optimum is unique (0: off).
            chunk: rows per stacked LP (HiGHS time grows faster than linearly with the LP's size: 128 rows was
                fastest for 10 and 100 classes, bench/modelguard_lp_speed.py).
        """
        super().__init__()
        checks = [
            (epsilon > 0, f"defense.epsilon must be > 0 (the L1 radius), got {epsilon}"),
            (margin >= 0, f"defense.margin must be >= 0, got {margin}"),
            (epsilon >= 2 * margin, f"defense.epsilon ({epsilon}) must be >= 2 * defense.margin ({margin}), else "
                                    "the top-1 margin can be infeasible; raise epsilon or lower the margin"),
            (log_offset > 0, f"defense.log_offset must be > 0 (log 0 is -inf), got {log_offset}"),
            (tie_break >= 0, f"defense.tie_break must be >= 0, got {tie_break}"),
            (chunk >= 1, f"defense.chunk must be >= 1, got {chunk}"),
        ]
        check_options(checks)
        self.epsilon = float(epsilon)
        self.margin = float(margin)
        self.log_offset = float(log_offset)
        self.tie_break = float(tie_break)
        self.chunk = int(chunk)

    @torch.no_grad()
    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if probs.shape[-1] < 2 or len(probs) == 0:
            return probs.clone()
        top = probs.argmax(-1).cpu().numpy()
        y = probs.detach().cpu().double().numpy()
        y = np.clip(y, 0.0, None)
        y = y / y.sum(1, keepdims=True)
        parts = [modelguard_w_solve(y[s:s + self.chunk], top[s:s + self.chunk], self.epsilon, self.margin,
                                    self.log_offset, self.tie_break) for s in range(0, len(y), self.chunk)]
        return torch.from_numpy(np.concatenate(parts)).to(device=probs.device, dtype=probs.dtype)


# ---------------------------------------------------------------------------------------------------------------
# ModelGuard-S: per-class centroids
# ---------------------------------------------------------------------------------------------------------------
def _l1(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a, b, p=1) if len(a) and len(b) else a.new_zeros(len(a), len(b))


def kmeans_l1(data: Tensor, centroids: Tensor, tol: float = 1e-3, max_iter: int = 100) -> tuple[Tensor, Tensor]:
    """The reference's k-means: L1 assignment, mean update, stop when no centroid moves more than `tol` (L2);
    empty clusters are dropped at the end. Returns (centroids, each point's L1 distance to its centroid)."""
    k = len(centroids)
    for _ in range(max_iter):
        assign = _l1(data, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k).to(data.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        moved = (new - centroids).norm(dim=1).max()
        centroids = new
        if moved < tol:
            break
    assign = _l1(data, centroids).argmin(1)
    centroids = centroids[torch.bincount(assign, minlength=k) > 0]
    return centroids, _l1(data, centroids).min(1).values


def cover_kmeans(data: Tensor, epsilon: float, tol: float = 1e-3, max_iter: int = 100) -> Tensor:
    """The reference's `cluster()`: k-means from the mean, adding the farthest point until all lie within epsilon."""
    centroids = data.mean(0, keepdim=True)
    for _ in range(len(data) + 1):  # each round adds a centroid; bounded in case k-means drops as many
        centroids, dist = kmeans_l1(data, centroids, tol, max_iter)
        worst = int(dist.argmax())
        if dist[worst] <= epsilon:
            break
        centroids = torch.cat([centroids, data[worst:worst + 1]])
    return centroids


class ModelGuardS(Defense):
    """ModelGuard-S: answers quantised to per-class centroids, the first within epsilon, grown on demand."""

    stateful = True
    preserves_argmax = False  # a centroid within epsilon can have another top-1

    def __init__(self, epsilon: float = 1.0, init: Literal["kmeans", "empty"] = "kmeans",
                 init_centroids: int | None = None, seed_groups: Literal["label", "predicted"] = "label",
                 init_size: int | None = None, frozen: bool = False, tol: float = 1e-3, max_iter: int = 100) -> None:
        """
        Args:
            epsilon: L1 radius: an answer is replaced by a centroid at most this far (the reference's scripts: 1.0).
            init: `kmeans` seeds the centroids from the victim's outputs on its training images; `empty` does not.
            init_centroids: null: the reference's covering k-means (as many centroids as needed to put every
                seeding output within epsilon); k: plain k-means with k centroids per class.
            seed_groups: group the seeding outputs by their true `label` (reference) or by the victim's `predicted`
                class.
            init_size: training images used for seeding (null: all), drawn with the defense's generator.
            frozen: never add centroids; with none within epsilon, answer with the class's nearest one.
            tol, max_iter: k-means stopping rule (reference: 1e-3 in L2, 100 iterations).
        """
        super().__init__()
        checks = [
            (epsilon > 0, f"defense.epsilon must be > 0 (the L1 radius), got {epsilon}"),
            (init in ("kmeans", "empty"), f"defense.init must be one of kmeans, empty; got {init!r}"),
            (init_centroids is None or init_centroids >= 1,
             f"defense.init_centroids must be >= 1 or null, got {init_centroids}"),
            (seed_groups in ("label", "predicted"),
             f"defense.seed_groups must be one of label, predicted; got {seed_groups!r}"),
            (init_size is None or init_size >= 1, f"defense.init_size must be >= 1 or null, got {init_size}"),
            (tol > 0, f"defense.tol must be > 0, got {tol}"),
            (max_iter >= 1, f"defense.max_iter must be >= 1, got {max_iter}"),
        ]
        check_options(checks)
        self.epsilon = float(epsilon)
        self.init = init
        self.init_centroids = init_centroids
        self.seed_groups = seed_groups
        self.init_size = init_size
        self.frozen = bool(frozen)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        # the seeded centroids (kept for reset) and the current ones, with their classes, in insertion order
        self.register_buffer("_seed_bank", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("_seed_cls", torch.zeros(0, dtype=torch.long))
        self.register_buffer("_bank", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("_cls", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def setup(self, context: DefenseSetup) -> None:
        k = context.num_classes
        bank, cls = torch.zeros(0, k, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        if self.init == "kmeans" and len(context.train_x):
            chosen = torch.randperm(len(context.train_x), generator=context.generator)
            if self.init_size is not None:
                chosen = chosen[: self.init_size]
            chosen = chosen.sort().values
            x, labels = context.train_x[chosen], context.train_y[chosen]
            probs = torch.cat([torch.softmax(context.victim(xb.to(context.device)).float(), -1).cpu().double()
                               for xb in x.split(4096)])
            groups = labels.long().cpu() if self.seed_groups == "label" else probs.argmax(-1)
            banks, classes = [], []
            for c in range(k):  # one k-means per class (not per sample)
                data = probs[groups == c]
                if not len(data):
                    continue
                if self.init_centroids is None:
                    cents = cover_kmeans(data, self.epsilon, self.tol, self.max_iter)
                else:
                    start = torch.randperm(len(data), generator=context.generator)[: self.init_centroids]
                    cents = kmeans_l1(data, data[start.sort().values], self.tol, self.max_iter)[0]
                banks.append(cents)
                classes.append(torch.full((len(cents),), c, dtype=torch.long))
            if banks:
                bank, cls = torch.cat(banks), torch.cat(classes)
        # float64 where the device has it (MPS does not)
        dtype = torch.float32 if torch.device(context.device).type == "mps" else torch.float64
        self._seed_bank, self._seed_cls = bank.to(context.device, dtype), cls.to(context.device)
        self.reset()

    def reset(self) -> None:
        """Back to the seeded centroids."""
        self._bank, self._cls = self._seed_bank.clone(), self._seed_cls.clone()

    @torch.no_grad()
    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        y = probs.detach().to(self._bank.device, self._bank.dtype)
        n, k = y.shape
        bank, cls = (self._bank if self._bank.shape[-1] == k else self._bank.new_zeros(0, k)), self._cls
        pred = y.argmax(-1)
        out = y.clone()
        if n == 0:
            return probs.clone()
        same = cls[None, :] == pred[:, None]  # (n, M)
        dist = _l1(y, bank)
        valid = same & (dist <= self.epsilon)
        has = valid.any(1)
        if len(bank):
            first = valid.to(torch.int8).argmax(1)  # the first centroid in insertion order
            out[has] = bank[first[has]]
        if self.frozen:  # no centroid within epsilon: the nearest of the class (the query itself if it has none)
            far = ~has & same.any(1)
            if far.any():
                out[far] = bank[torch.where(same, dist, torch.full_like(dist, float("inf")))[far].argmin(1)]
            return out.to(probs.device, probs.dtype)
        pending = torch.nonzero(~has).squeeze(1)
        new = []
        while len(pending):  # one step per new centroid: the queries of this batch answered in order
            r, rest = pending[0], pending[1:]
            new.append(r)
            # the same distance function as for the existing centroids: a boundary case reads alike either way
            hit = (pred[rest] == pred[r]) & (_l1(y[rest], y[r][None]).squeeze(1) <= self.epsilon)
            out[rest[hit]] = y[r]
            pending = rest[~hit]
        if new:
            idx = torch.stack(new)
            self._bank = torch.cat([bank, y[idx]])
            self._cls = torch.cat([cls, pred[idx]])
        return out.to(probs.device, probs.dtype)

    def state_size(self) -> int:
        return int(len(self._bank))

    def report(self) -> dict[str, float]:
        return {"centroids": float(len(self._bank)), "new_centroids": float(len(self._bank) - len(self._seed_bank))}


@hookimpl
def register_defenses(register):
    register("modelguard-w", ModelGuardW, "ModelGuard-W (Tang et al. 2024): max-misinformation LP in an L1 ball")
    register("modelguard-s", ModelGuardS, "ModelGuard-S (Tang et al. 2024): per-class centroid quantisation")
