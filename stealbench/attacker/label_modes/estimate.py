"""Estimating the reverse sigmoid's (beta, gamma) from the attacker's own answers, off any grid.

What identifies them: a confident victim gives some classes probabilities below the defense's clip floor
(eps = 1e-9); the defense clips those to eps, so they come out as several equal answers y'_floor = f(eps) / Z,
which pins the normaliser Z for a guessed (beta, gamma). The guess is right when the preimages of Z y'_i then
sum to 1: one equation per row, a curve in the plane of the two parameters, and the truth is where the rows'
curves meet. The search runs in c = f(eps) - eps = beta (sigmoid(gamma L) - 1/2), L = logit(1 - eps), and gamma.
Rows whose other entries are saturated pin c alone, in closed form (f(1 - y) = 1 - f(y)); gamma is then where the
rows' roots along that ridge agree (a fine scan). Without such rows (an MNIST CNN's answers: 2-4 entries at the
floor, the others spread over 1e-9 .. 1e-2) a Hough-style zoom finds the grid cell most rows' curves pass
through and refines it (:func:`_zoom`). Both end in a polish (Nelder-Mead, scipy) of a soft count of the rows
the parameters do not explain, r / (r + 1e-2), r the best branch assignment's |sum - 1| relative to the row's
mass off its top entry: an absolute |sum - 1| cannot tell a confident row's tiny entries apart, and was fitted
as well by parameters far from the truth (beta 100, gamma 0.001) whose inversion is 0.4 .. 0.8 L1 off. At the
truth r is float32 rounding (median 9e-4, 90th percentile 9e-3 on an MNIST victim). No grid point or default
guess is special. Where the parameters are barely identified (gamma 0.5: c ~ beta / 2 for every gamma above
~0.3) the estimate can be wrong with a misfit like the truth's; `label_mode/recovery_l1` says so.
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
_CAP = 1.0  # residual of a row without any preimage
_TOL = 1e-2  # a row is explained when |sum - 1| is within about this share of its mass off the top entry
_C_MAX = 0.999  # c = f(eps) - eps < 1 for any beta (f is clipped to [0, 1])
_FREE = 8  # entries of a row whose branch is searched (see _searched_entries); the others sit on the low branch


def _branch_table(k: int) -> Tensor:
    """Branch assignments of a row's k searched entries, the argmax first: it on M or H and every other entry on
    L, or one of them on M (a confident victim's answers; every assignment more lets a wrong (beta, gamma) explain
    a row by coincidence)."""
    rows = []
    for top in (1, 2):  # the largest: 1 = M, 2 = H
        rows.append([top] + [0] * (k - 1))
        for j in range(1, k):
            rows.append([top] + [1 if i == j else 0 for i in range(1, k)])
    return torch.tensor(rows)


def _searched_entries(rows: Tensor, floor: Tensor, m: int) -> Tensor:
    """(n, m): per row the entries whose branch is searched: the argmax first, then the entries furthest below
    the floor value (on the low branch f decreases, so the smallest answers are the likeliest to be on M); the
    entries equal to the floor value come last (they are the clip floor, on L)."""
    key = rows.clone()
    key[(rows - floor[:, None]).abs() <= 1e-6 * floor[:, None]] = math.inf
    key.scatter_(1, rows.argmax(-1, keepdim=True), -math.inf)
    return key.argsort(-1)[:, :m]


def _sums(br: _Branches, z: Tensor, rows: Tensor, order: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
    """(n, C) each: the preimages' sum under every branch assignment of `table` at normaliser z (n,), and the top
    entry's preimage; NaN where a preimage is missing."""
    pre = br.preimages(z[:, None] * rows)  # (n, K, 3)
    pre = torch.where(rows[..., None] <= 0, torch.full_like(pre, _EPS), pre)
    top = pre.gather(1, order[..., None].expand(-1, -1, 3))  # (n, m, 3): the searched entries
    others = torch.ones_like(rows, dtype=torch.bool).scatter(1, order, False)
    rest = torch.where(others, pre[..., 0], torch.zeros_like(rows)).sum(-1)  # the others, on the low branch
    n, m, _ = top.shape
    chosen = top[:, None, :, :].expand(n, len(table), m, 3).gather(-1, table[None, :, :, None].expand(
        n, -1, -1, 1)).squeeze(-1)  # (n, C, m)
    return chosen.sum(-1) + rest[:, None], chosen[..., 0]


def _signed_sums(br: _Branches, z: Tensor, rows: Tensor, order: Tensor, table: Tensor) -> Tensor:
    """(n, C): sum - 1 of every branch assignment at normaliser z (n,); NaN where a preimage is missing."""
    return _sums(br, z, rows, order, table)[0] - 1


def _best_sums(br: _Branches, z: Tensor, rows: Tensor, order: Tensor, table: Tensor) -> Tensor:
    """Per row, the best branch assignment's |sum - 1| relative to the row's mass off its top entry (capped;
    NaN -> cap): sum - 1 = (the others' sum) - (1 - top), and a confident row's entries are far below any
    absolute tolerance."""
    sums, top = _sums(br, z, rows, order, table)
    return ((sums - 1).abs() / (sums - top)).nan_to_num(nan=_CAP).clamp_max(_CAP).min(-1).values


@dataclass(frozen=True)
class Estimate:
    beta: float
    gamma: float
    rows: int  # clip-floor answers behind it
    misfit: float  # soft share of those rows the estimate does not explain (see _best_sums); ~0.15 at the truth


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


_G_RANGE = (math.log(1e-3), math.log(10.0))  # log gamma searched
_C_RANGE = (math.log(1e-4), math.log(_C_MAX))  # log c searched when no row is saturated
_COARSE = 41  # grid points per axis of the first level
_KEEP = 128  # cells kept per level (the most rows crossing first)
_ZOOM_ROWS = 16  # rows the zoom counts crossings of (the polish scores all of them)


# The zoom's gamma axis is v = asinh(gamma L): f's shape depends on gamma through gamma L (the logit range the
# sigmoid sees), and every gamma << 1 / L gives nearly the same function, the linear-in-logit limit
# f(y) = y - (c / L) logit(y). In log gamma that limit would fill most of the grid with cells every row crosses;
# in v it is a thin strip at v ~ 0, and v is logarithmic in gamma above 1 / L.
_V_RANGE = (math.asinh(1e-3 * _L), math.asinh(10.0 * _L))


def _log_gamma(v: np.ndarray) -> np.ndarray:
    return np.log(np.sinh(v) / _L)


def _signs(log_c: float, log_g: float, rows: Tensor, floor: Tensor, order: Tensor, table: Tensor,
           points: int) -> Tensor:
    """(n, C) int8: the sign of sum - 1 of every branch assignment at (c, gamma); 0 where a preimage is missing."""
    gamma = math.exp(log_g)
    beta = beta_from_ridge(math.exp(log_c), gamma)
    if not 0 < beta < 100:
        return torch.zeros(len(rows), len(table), dtype=torch.int8)
    br = _Branches(beta, gamma, points=points)
    s = _signed_sums(br, br.f_eps / floor, rows, order, table)
    return torch.sign(s.nan_to_num(0.0)).to(torch.int8)


def _crossing_rows(log_gs: np.ndarray, log_cs: np.ndarray, *args, points: int) -> Tensor:
    """(G - 1, C - 1): per grid cell, the rows with some branch assignment whose sum - 1 changes sign across the
    cell's corners (its zero curve passes through the cell)."""
    s = torch.stack([torch.stack([_signs(lc, lg, *args, points=points) for lc in log_cs]) for lg in log_gs])
    corners = (s[:-1, :-1], s[1:, :-1], s[:-1, 1:], s[1:, 1:])
    above = torch.stack([c > 0 for c in corners]).any(0)
    below = torch.stack([c < 0 for c in corners]).any(0)
    return (above & below).any(-1).sum(-1)


def _zoom(rows: Tensor, floor: Tensor, order: Tensor, table: Tensor) -> list[tuple[float, float]]:
    """Candidate (log c, log gamma) when no row is saturated: the cells of a (log gamma, log c) grid through
    which the most rows' zero curves pass, refined 4 x 4 at a time. Every exactly answered row's curve passes
    through the truth, so its cell keeps them all while cells where curves only pass near each other lose rows
    as they shrink. It stops where the lookup tables' own error (~1e-4 in log gamma) starts to cost rows too;
    the polish takes it from there. (A residual scan instead has a basin ~0.1% of c wide: coarse steps miss it.)"""
    args = (rows[:_ZOOM_ROWS], floor[:_ZOOM_ROWS], order[:_ZOOM_ROWS], table)
    log_gs, log_cs = np.linspace(*_V_RANGE, _COARSE), np.linspace(*_C_RANGE, _COARSE)  # log_gs: v, see _v
    counts = _crossing_rows(_log_gamma(log_gs), log_cs, *args, points=2001)
    width = np.array([log_gs[1] - log_gs[0], log_cs[1] - log_cs[0]])
    cells = [(log_gs[i], log_cs[j], int(counts[i, j])) for i, j in torch.nonzero(counts).tolist()]
    first_top = max(n for _, _, n in cells)
    best = cells
    while width[0] > 1e-7:
        top = max(n for _, _, n in cells)
        if top < 0.75 * first_top:
            break
        cells = sorted((c for c in cells if c[2] >= top - max(1, top // 10)), key=lambda c: -c[2])[:_KEEP]
        best, best_width = cells, width
        sub = width / 4
        points = 2001 if width[0] > 1e-2 else 4001
        finer = []
        for lg, lc, _ in cells:
            gs, cs = lg + sub[0] * np.arange(5), lc + sub[1] * np.arange(5)
            counts = _crossing_rows(_log_gamma(gs), cs, *args, points=points)
            finer += [(gs[i], cs[j], int(counts[i, j])) for i in range(4) for j in range(4)]
        cells, width = finer, sub
    found = [(lc + best_width[1] / 2, float(_log_gamma(np.array([v + best_width[0] / 2]))[0])) for v, lc, _ in best[:3]]
    return found + _along_ridge(min(lc for lc, _ in found), max(lc for lc, _ in found), args)


def _along_ridge(lo: float, hi: float, args) -> list[tuple[float, float]]:
    """The best-scoring points of a dense grid over all of gamma and a narrow band of c around the zoom's finds.
    Where gamma is weakly identified (gamma L >> 1: c ~ beta / 2 whatever gamma), every row's curve runs along
    the same ridge in c, cells all along it keep every row, and the cap on kept cells can drop the truth's; the
    soft count still singles it out (measured: 0.08 at the truth against 0.16 at the best point elsewhere). The
    basin is narrow: on an MNIST victim's JBDA answers at gamma 0.5 this 80 x 48 grid lands in it, a 64 x 40 one
    does not."""
    vs = np.linspace(*_V_RANGE, 80)
    log_cs = np.linspace(lo - 3e-3, hi + 3e-3, 48)
    scored = []
    for log_g in _log_gamma(vs):
        for log_c in log_cs:
            r = _residuals(math.exp(log_c), math.exp(log_g), *args, points=2001)
            if r is not None:
                scored.append((_soft_count(r), float(log_c), float(log_g)))
    return [(log_c, log_g) for _, log_c, log_g in sorted(scored)[:3]]


def _soft_count(r: Tensor) -> float:
    """The share of rows the parameters do not explain, softly: r / (r + tol) per row, r from _best_sums."""
    return (r / (r + _TOL)).mean().item()


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
        return _soft_count(r)

    c_known = _ridge_from_saturated(rows, free)
    if c_known is not None:  # c in closed form: gamma where the rows' roots along that ridge agree
        log_gs = np.linspace(*_G_RANGE, 400)
        _, log_g = _root_cluster(log_gs, math.log(c_known), rows, floor, order, table)
        lo, hi = log_g - 2 * _WINDOW, log_g + 2 * _WINDOW
        result = minimize_scalar(lambda lg: score((math.log(c_known), lg)), bounds=(lo, hi), method="bounded",
                                 options={"xatol": 1e-9})
        starts = [np.array([math.log(c_known), result.x])]
    else:
        starts = [np.array(point) for point in _zoom(rows, floor, order, table)]
    best_score, best = math.inf, starts[0]
    for start in starts:  # polish both coordinates (Nelder-Mead); the lowest soft count wins
        result = minimize(score, start, method="Nelder-Mead", options={
            "xatol": 1e-9, "fatol": 1e-12, "maxiter": 200,
            "initial_simplex": start + np.array([[0, 0], [1e-5, 0], [0, 1e-5]])})
        for value, at in ((score(start), start), (float(result.fun), result.x)):
            if value < best_score:
                best_score, best = value, np.asarray(at)
    gamma = math.exp(best[1])
    return Estimate(beta_from_ridge(math.exp(best[0]), gamma), gamma, len(rows), best_score)


__all__ = ["Estimate", "beta_from_ridge", "estimate_reverse_sigmoid", "floor_rows"]
