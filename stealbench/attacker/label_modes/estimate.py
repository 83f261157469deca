"""Estimating the reverse sigmoid's (beta, gamma) from the attacker's own answers, off any grid.

What identifies them: a confident victim gives some classes probabilities below the defense's clip floor
(eps = 1e-9); the defense clips those to eps, so they come out as several equal answers y'_floor = f(eps) / Z,
which pins the normaliser Z for a guessed (beta, gamma). The guess is right when the preimages of Z y'_i then
sum to 1. Rows whose other entries are saturated pin only c = f(eps) - eps = beta (sigmoid(gamma L) - 1/2),
L = logit(1 - eps) (and so do rows with two free entries: f(1 - y) = 1 - f(y)); rows with three or more entries
above the floor pin the point along that ridge. So the search runs in (log c, log gamma), where the two are
nearly separate: c comes in closed form from the saturated rows, then gamma is searched along the ridge (a
fine scan, Brent's method between the best points' neighbours) and both are polished (Nelder-Mead, scipy).
The score is a soft count of the rows the parameters do not explain (r / (r + 1e-5), r the best branch
assignment's |sum - 1|): at the truth every exact answer is explained, near it few are, so a coincidental tie
or a row out of reach costs one row, not the estimate. The estimate is wherever the optimiser ends: no grid
point or default guess is special.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from torch import Tensor

from .reverse_sigmoid import _EPS, _Branches, _floor_values

_L = math.log((1 - _EPS) / _EPS)  # logit(1 - eps)
_CAP = 1.0  # |sum - 1| of a row without any preimage
_TOL = 1e-5  # a row is explained when its preimages sum to 1 within about this much (float32 answers, tables)
_C_MAX = 0.999  # c = f(eps) - eps < 1 for any beta (f is clipped to [0, 1])
_FREE = 8  # entries of a row whose branch is searched (see _searched_entries); the others sit on the low branch


def _branch_table(k: int) -> Tensor:
    """(2**k, k) branch assignments of a row's k searched entries, the argmax first: it on M or H, the others on
    L or M (only one entry can exceed 1/2, and only that one can sit on H)."""
    codes = torch.arange(2 ** k)[:, None] >> torch.arange(k)[None, :] & 1  # (2**k, k) bits
    table = codes.clone()  # others: 0 = L, 1 = M
    table[:, 0] = 1 + codes[:, 0]  # the largest: 1 = M, 2 = H
    return table


def _searched_entries(rows: Tensor, floor: Tensor, m: int) -> Tensor:
    """(n, m): per row the entries whose branch is searched: the argmax first, then the entries furthest below
    the floor value (on the low branch f decreases, so the smallest answers are the likeliest to be on M); the
    entries equal to the floor value come last (they are the clip floor, on L)."""
    key = rows.clone()
    key[(rows - floor[:, None]).abs() <= 1e-6 * floor[:, None]] = math.inf
    key.scatter_(1, rows.argmax(-1, keepdim=True), -math.inf)
    return key.argsort(-1)[:, :m]


def _signed_sums(br: _Branches, z: Tensor, rows: Tensor, order: Tensor, table: Tensor) -> Tensor:
    """(n, C): sum - 1 of every branch assignment of `table` at normaliser z (n,); NaN where a preimage is missing."""
    pre = br.preimages(z[:, None] * rows)  # (n, K, 3)
    pre = torch.where(rows[..., None] <= 0, torch.full_like(pre, _EPS), pre)
    top = pre.gather(1, order[..., None].expand(-1, -1, 3))  # (n, m, 3): the searched entries
    others = torch.ones_like(rows, dtype=torch.bool).scatter(1, order, False)
    rest = torch.where(others, pre[..., 0], torch.zeros_like(rows)).sum(-1)  # the others, on the low branch
    n, m, _ = top.shape
    chosen = top[:, None, :, :].expand(n, len(table), m, 3).gather(-1, table[None, :, :, None].expand(
        n, -1, -1, 1)).squeeze(-1)  # (n, C, m)
    return chosen.sum(-1) + rest[:, None] - 1


def _best_sums(br: _Branches, z: Tensor, rows: Tensor, order: Tensor, table: Tensor) -> Tensor:
    """Per row, the |sum - 1| of the best branch assignment at normaliser z (n,) (capped; NaN -> cap)."""
    values = z[:, None] * rows  # (n, K)
    pre = br.preimages(values)  # (n, K, 3)
    pre = torch.where(rows[..., None] <= 0, torch.full_like(pre, _EPS), pre)
    top = pre.gather(1, order[..., None].expand(-1, -1, 3))  # (n, m, 3): the m largest entries
    others = torch.ones_like(rows, dtype=torch.bool).scatter(1, order, False)
    rest = torch.where(others, pre[..., 0], torch.zeros_like(rows)).sum(-1)  # the others, on the low branch
    n, m, _ = top.shape
    chosen = top[:, None, :, :].expand(n, len(table), m, 3).gather(-1, table[None, :, :, None].expand(
        n, -1, -1, 1)).squeeze(-1)  # (n, C, m)
    sums = chosen.sum(-1) + rest[:, None]
    return (sums - 1).abs().nan_to_num(nan=_CAP).clamp_max(_CAP).min(-1).values


@dataclass(frozen=True)
class Estimate:
    beta: float
    gamma: float
    rows: int  # clip-floor answers behind it
    misfit: float  # soft share of those rows the estimate does not explain (|sum - 1| >> 1e-5); ~0 at the truth


def beta_from_ridge(c: float, gamma: float) -> float:
    return c / (1.0 / (1.0 + math.exp(-gamma * _L)) - 0.5)


def floor_rows(released: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised rows with at least two answers equal to their floor value, and their count of other entries."""
    y = released.double().clamp_min(0)
    y = y / y.sum(-1, keepdim=True).clamp_min(1e-300)
    floor = _floor_values(y)
    tied = (y - floor[:, None]).abs() <= 1e-6 * floor[:, None]
    rows = (tied.sum(-1) >= 2) & (floor > 0)
    return y[rows], (~tied[rows]).sum(-1)


def _ridge_from_saturated(rows: Tensor, free: Tensor) -> float | None:
    """c = f(eps) - eps from the rows with at most two entries above the floor, or None if there are none.

    Their clean entries sum to 1 with f(1 - y) = 1 - f(y), so Z = 1 + (K - 2) f(eps) and y'_floor = f(eps) / Z:
    f(eps) = y'_floor / (1 - (K - 2) y'_floor), exactly. The median guards against rows whose ties are not the
    floor."""
    few = free <= 2
    if not few.any():
        return None
    floor = _floor_values(rows[few])
    f_eps = floor / (1 - (rows.shape[-1] - 2) * floor)
    c = float(f_eps.median()) - _EPS
    return c if 0 < c < _C_MAX else None


def _pick(free: Tensor, max_rows: int) -> Tensor:
    """Indices of up to `max_rows` rows, spread over the sample, the informative ones (>= 3 free entries) first."""
    informative = torch.nonzero(free >= 3).flatten()
    others = torch.nonzero(free < 3).flatten()
    take_i = informative[torch.linspace(0, len(informative) - 1, min(len(informative), 3 * max_rows // 4)).long()] \
        if len(informative) else informative
    room = max_rows - len(take_i)
    take_o = others[torch.linspace(0, len(others) - 1, min(len(others), room)).long()] if len(others) else others
    return torch.cat([take_i, take_o])


_WINDOW = 2e-3  # rows whose roots lie within this much of each other in log gamma agree


def _root_cluster(log_gs: np.ndarray, log_c: float, rows: Tensor, floor: Tensor, order: Tensor,
                  table: Tensor) -> tuple[int, float]:
    """Along the ridge at c: every (row, branch assignment)'s roots in log gamma (sign changes of sum - 1 between
    scan points, placed by linear interpolation); returns the most rows whose roots agree within _WINDOW and
    where. The truth is a root of every exactly answered row; wrong assignments' roots scatter."""
    signed = []
    for lg in log_gs:
        gamma = math.exp(lg)
        beta = beta_from_ridge(math.exp(log_c), gamma)
        if not 0 < beta < 100:
            signed.append(torch.full((len(rows), len(table)), float("nan"), dtype=torch.float64))
            continue
        br = _Branches(beta, gamma, points=4001)
        signed.append(_signed_sums(br, br.f_eps / floor, rows, order, table))
    s = torch.stack(signed)  # (G, n, C)
    a, b = s[:-1], s[1:]
    crossing = (a * b <= 0) & torch.isfinite(a) & torch.isfinite(b) & (a != b)
    g_idx, row, _ = torch.nonzero(crossing, as_tuple=True)
    if len(row) == 0:
        return 0, float(log_gs[len(log_gs) // 2])
    grid = torch.as_tensor(log_gs, dtype=torch.float64)
    wa, wb = a[crossing], b[crossing]
    roots = grid[g_idx] + (grid[g_idx + 1] - grid[g_idx]) * (wa / (wa - wb))
    # distinct rows per window (two offsets of the bins, so a cluster on a bin edge is not split)
    best_count, best_at = 0, float(roots[0])
    for offset in (0.0, 0.5):
        bins = torch.floor(roots / _WINDOW + offset).long()
        pairs = torch.unique(torch.stack([bins, row]), dim=1)
        values, counts = torch.unique(pairs[0], return_counts=True)
        i = int(counts.argmax())
        if int(counts[i]) > best_count:
            in_bin = bins == values[i]
            best_count, best_at = int(counts[i]), float(roots[in_bin].median())
    return best_count, best_at


def _residuals(c: float, gamma: float, rows: Tensor, floor: Tensor, order: Tensor, table: Tensor,
               points: int = 4001) -> Tensor | None:
    """Per row, |sum - 1| of its best branch assignment under (c, gamma); None where beta leaves (0, 100)."""
    beta = beta_from_ridge(c, gamma)
    if not 0 < beta < 100:
        return None
    br = _Branches(beta, gamma, points=points)
    return _best_sums(br, br.f_eps / floor, rows, order, table)


def _median_log_residual(c: float, gamma: float, rows: Tensor, floor: Tensor, order: Tensor, table: Tensor,
                         points: int) -> float:
    r = _residuals(c, gamma, rows, floor, order, table, points)
    return 0.0 if r is None else float(torch.log10(r + 1e-12).median())


def _ridge_candidates(rows: Tensor, floor: Tensor, order: Tensor, table: Tensor, keep: int = 3) -> list[float]:
    """log c candidates when no row is saturated (a victim that is rarely that confident): c where the rows'
    median log |sum - 1|, at its best gamma of a coarse scan, has its deepest local minima (a coarse log-c scan,
    then Brent in each minimum's bracket). The median ignores the rows a wrong branch assignment misses; the
    basin around the truth is narrow (about 1% of c), hence the refinement before the roots are clustered."""
    log_gs = np.linspace(math.log(1e-3), math.log(10.0), 40)

    def ridge(log_c: float, points: int = 4001) -> float:
        return min(_median_log_residual(math.exp(log_c), math.exp(lg), rows, floor, order, table, points)
                   for lg in log_gs)

    log_cs = np.linspace(math.log(1e-4), math.log(_C_MAX), 48)
    values = np.array([ridge(lc, points=1001) for lc in log_cs])
    minima = [i for i in range(len(values)) if (i == 0 or values[i] <= values[i - 1])
              and (i == len(values) - 1 or values[i] <= values[i + 1])]
    found = []
    for i in sorted(minima, key=lambda i: values[i])[:keep]:
        lo, hi = log_cs[max(i - 1, 0)], log_cs[min(i + 1, len(log_cs) - 1)]
        result = minimize_scalar(ridge, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
        found.append((float(result.fun), float(result.x)))
    return [log_c for _, log_c in sorted(found)]


def estimate_reverse_sigmoid(released: Tensor, *, max_rows: int = 64, min_floor_rows: int = 8) -> Estimate | None:
    """(beta, gamma) of a reverse sigmoid from its answers alone, or None when fewer than `min_floor_rows`
    answers show the clip floor (nothing then identifies the parameters)."""
    rows, free = floor_rows(released)
    if len(rows) < min_floor_rows:
        return None
    keep = _pick(free, max_rows)
    rows, free = rows[keep], free[keep]
    floor = _floor_values(rows)
    m = min(_FREE, rows.shape[-1])
    order = _searched_entries(rows, floor, m)
    table = _branch_table(m)

    def score(theta) -> float:
        log_c, log_g = float(theta[0]), float(theta[1])
        if not (-12 < log_c < math.log(_C_MAX) and -9 < log_g < 3):
            return 2.0
        r = _residuals(math.exp(log_c), math.exp(log_g), rows, floor, order, table)
        if r is None:
            return 2.0
        return (r / (r + _TOL)).mean().item()  # a soft count of the rows the parameters do not explain

    log_gs = np.linspace(math.log(1e-3), math.log(10.0), 400)
    c_known = _ridge_from_saturated(rows, free)
    log_cs = [math.log(c_known)] if c_known is not None else _ridge_candidates(rows, floor, order, table)
    best_count, best = -1, None
    for log_c in log_cs:
        count, log_g = _root_cluster(log_gs, log_c, rows, floor, order, table)
        if count > best_count:
            best_count, best = count, np.array([log_c, log_g])
    # polish: Brent along the ridge in the cluster's window, then both coordinates (Nelder-Mead)
    lo, hi = best[1] - 2 * _WINDOW, best[1] + 2 * _WINDOW
    result = minimize_scalar(lambda lg: score((best[0], lg)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-9})
    best_score, best = float(result.fun), np.array([best[0], result.x])
    result = minimize(score, best, method="Nelder-Mead", options={
        "xatol": 1e-9, "fatol": 1e-12, "maxiter": 200,
        "initial_simplex": best + np.array([[0, 0], [1e-5, 0], [0, 1e-5]])})
    if result.fun < best_score:
        best_score, best = float(result.fun), result.x
    gamma = math.exp(best[1])
    return Estimate(beta_from_ridge(math.exp(best[0]), gamma), gamma, len(rows), best_score)


__all__ = ["Estimate", "beta_from_ridge", "estimate_reverse_sigmoid", "floor_rows"]
