"""Inverting the reverse sigmoid (the `deceptive` defense) with known parameters, vectorised over rows.

The defense releases y' = normalise(f(y)) with f(y) = y - beta (sigmoid(gamma logit y) - 1/2), y clipped to
[eps, 1 - eps] first. f is not monotone: a released value has up to three preimages, and which one is the clean
answer is what the defense hides. :func:`invert_reverse_sigmoid` finds, per row, the normaliser and branch
assignment whose preimages sum to 1 and reproduce the answer exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-9  # the reverse sigmoid clips y to [eps, 1 - eps] before the logit (see defenses/deceptive.py)
_GRID = 20001  # points of the lookup table in logit space
_ZGRID = 64  # normaliser candidates per row (plus the clip-floor hypothesis)


def _rs_f(y: Tensor, beta: float, gamma: float) -> Tensor:
    """The unnormalised reverse sigmoid f(y) = y - beta (sigmoid(gamma logit y) - 1/2)."""
    return y - beta * (torch.sigmoid(gamma * torch.logit(y)) - 0.5)


class _Branches:
    """Monotone pieces of f on [eps, 1-eps] as lookup tables (f -> logit y), for vectorised inversion.

    For gamma < 1 (and beta*gamma < 1) f decreases on (0, y*), increases on (y*, 1-y*) and decreases again on
    (1-y*, 1): a released value has up to three preimages (L, M, H). That is what makes the defense deceptive.
    """

    def __init__(self, beta: float, gamma: float, points: int = _GRID) -> None:
        lo, hi = math.log(_EPS / (1 - _EPS)), math.log((1 - _EPS) / _EPS)
        logits = torch.linspace(lo, hi, points, dtype=torch.float64)
        f = _rs_f(torch.sigmoid(logits), beta, gamma)
        slope = torch.sign(f[1:] - f[:-1])
        slope[slope == 0] = 1
        # split at sign changes of the slope; keep the first three pieces (L, M, H), the middle one increasing
        cuts = (torch.nonzero(slope[1:] != slope[:-1]).flatten() + 1).tolist()
        bounds = [0, *cuts, points - 1]
        pieces = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            fl, ll = f[a:b + 1], logits[a:b + 1]
            if fl[-1] < fl[0]:
                fl, ll = fl.flip(0), ll.flip(0)
            pieces.append((fl.contiguous(), ll.contiguous()))
        if len(pieces) == 1:  # monotone f (e.g. gamma >= 1): only the middle branch
            pieces = [None, pieces[0], None]
        elif len(pieces) == 2:
            pieces = [pieces[0], pieces[1], None] if slope[0] < 0 else [None, pieces[0], pieces[1]]
        self.pieces = pieces[:3]
        self.fmin = float(f.min())
        self.fmax = float(f.max())
        self.f_eps = float(f[0])

    def inverse(self, values: Tensor, branch: int) -> Tensor:
        """y with f(y) = values on one branch (NaN where the branch has no preimage).

        Values within a relative 1e-5 outside the branch's range (float32 answers) snap to its end points.
        """
        piece = self.pieces[branch]
        if piece is None:
            return torch.full_like(values, float("nan"))
        fs, ls = piece
        tol = 1e-5 * fs[-1].abs() + 1e-12
        inside = (values >= fs[0] - tol) & (values <= fs[-1] + tol)
        v = values.clamp(fs[0], fs[-1]).contiguous()
        idx = torch.searchsorted(fs, v).clamp(1, len(fs) - 1)
        f0, f1 = fs[idx - 1], fs[idx]
        w = ((v - f0) / (f1 - f0).clamp_min(1e-300)).clamp(0, 1)
        y = torch.sigmoid(ls[idx - 1] + w * (ls[idx] - ls[idx - 1]))
        return torch.where(inside, y, torch.full_like(y, float("nan")))

    def preimages(self, values: Tensor) -> Tensor:
        """(..., 3): the L, M and H preimages of every value (NaN where absent)."""
        return torch.stack([self.inverse(values, b) for b in range(3)], dim=-1)


def _candidates(released: Tensor) -> tuple[Tensor, Tensor]:
    """Branch assignments tried per row, (n, C, K) in {0: L, 1: M, 2: H}, and their prior cost (lower first).

    Tiers, cheapest first: one entry on H or M and all others on L (a confident victim); the released argmax
    on H or M plus one more entry on M; every entry on M (an uncertain victim). Within a tier the caller
    prefers the lowest-entropy solution.
    """
    n, K = released.shape
    top = released.argmax(-1)
    eye = torch.eye(K, dtype=torch.long)
    single = torch.cat([eye * 2, eye]).expand(n, 2 * K, K)  # (n, 2K, K)
    single_cost = torch.full((n, 2 * K), 10.0, dtype=torch.float64)
    pair = torch.ones(n, K, K, dtype=torch.long) * eye  # (n, j, K): entry j on M ...
    pair = torch.cat([pair, pair.clone()], 1)
    rows = torch.arange(n)
    pair[rows, :K, top] = 2  # ... plus the argmax on H
    pair[rows, K:, top] = 1  # ... or on M
    pair_cost = torch.full((n, 2 * K), 20.0, dtype=torch.float64)
    every = torch.ones(n, 1, K, dtype=torch.long)
    assign = torch.cat([single, pair, every], 1)
    cost = torch.cat([single_cost, pair_cost, torch.full((n, 1), 30.0, dtype=torch.float64)], 1)
    return assign, cost


def invert_reverse_sigmoid(released: Tensor, beta: float, gamma: float, *, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Estimate the clean probabilities behind reverse-sigmoid answers; returns (probs, solved mask).

    Solves f(y_i) = Z * y'_i for all i with sum(y) = 1, over the normaliser Z and a branch assignment
    (see :class:`_Branches`). Every assignment of :func:`_candidates` gets its own roots: Z pinned by the clip
    floor (:func:`_solve_at_floor`), Z bisected just below it (:func:`_roots_below_floor`) and Z bisected inside
    the first grid bracket where its sum crosses 1. A root counts only if the defense's forward pass on it
    reproduces the answer (:data:`REPRODUCE_TOL`). Among those exact roots the clip-floor ones come first (the
    usual, saturated victim), then the lowest prior cost (victims are usually confident). Several assignments
    can be exact: that ambiguity is the defense's point, and the prior can pick the wrong one. Only rows without
    any exact root fall back to an inexact guess: the cheapest clip-floor candidate whose sum is within 2e-3 of
    1, else the answer unchanged; neither counts as solved.
    """
    br = _Branches(beta, gamma)
    y_rel = released.double().clamp_min(0)
    y_rel = y_rel / y_rel.sum(-1, keepdim=True).clamp_min(1e-300)
    B = len(y_rel)
    out = y_rel.clone()
    solved = torch.zeros(B, dtype=torch.bool)
    t = torch.linspace(0, 1, _ZGRID, dtype=torch.float64)
    for start in range(0, B, chunk):
        yr = y_rel[start:start + chunk]
        n = len(yr)
        assign, cost = _candidates(yr)  # (n, C, K), (n, C)
        pos = yr.masked_fill(yr <= 0, float("inf"))
        # every released value must be reachable: fmin <= Z y'_i <= fmax
        z_lo = (br.fmin / pos.min(-1).values) * (1 - 1e-6)
        z_hi = (br.fmax / yr.max(-1).values) * (1 + 1e-6)
        z_hi = torch.maximum(z_hi, z_lo * (1 + 1e-9))
        zs = z_lo[:, None] * (z_hi / z_lo)[:, None] ** t  # (n, G), log-spaced
        resid = _assignment_values(br, zs, yr, assign).sum(-1) - 1.0  # (n, G, C)
        finite = torch.isfinite(resid)
        sign_change = (resid[:, :-1] * resid[:, 1:] <= 0) & finite[:, :-1] & finite[:, 1:]
        has_root = sign_change.any(1)  # (n, C)
        first = sign_change.double().argmax(1)  # (n, C): the first bracket of each assignment
        root_y = _bracketed_roots(br, zs, yr, assign, first, beta, gamma)  # (n, C, K)
        root_score = _exact_score(root_y, yr, cost, has_root, beta, gamma)
        # Entries the victim put below the clip floor are all released as f(eps) / Z, which pins Z exactly:
        # a root at the edge of the feasible range, that sign changes on the grid cannot see.
        floor_y, floor_fits = _solve_at_floor(br, yr, assign, beta, gamma)
        floor_score = _exact_score(floor_y, yr, cost, floor_fits, beta, gamma)
        # The smallest entry is often just above the floor (a victim probability of 1e-8, say): then the root
        # lies just below the pinned Z, between it and the grid's last point; bracket it on a fine ladder.
        near_y, near_ok = _roots_below_floor(br, yr, assign, beta, gamma)
        near_score = _exact_score(near_y, yr, cost, near_ok, beta, gamma)
        # Floor roots first: equal or near-floor smallest answers are the mark of a saturated victim (most real
        # ones), which another exact root, explaining them as probabilities far above the floor, rarely is.
        all_y = torch.cat([floor_y, near_y, root_y], 1)
        all_score = torch.cat([floor_score, near_score, root_score + 100.0], 1)
        best = all_score.argmin(-1)
        good = torch.isfinite(all_score.gather(1, best[:, None]).squeeze(1))
        rows = torch.arange(start, start + n)
        out[rows[good]] = all_y[torch.arange(n), best][good]
        solved[rows[good]] = True
        # No exact root: a clip-floor guess whose sum is within 2e-3 of 1 is still far closer to the clean answer
        # than the released one (with estimated parameters, off the true point of their ridge, that is most
        # rows), so it is returned, but not counted as solved.
        guess_score = _exact_score(floor_y, yr, cost, floor_fits, beta, gamma, tol=math.inf)
        guess = guess_score.argmin(-1)
        use_guess = ~good & torch.isfinite(guess_score.gather(1, guess[:, None]).squeeze(1))
        out[rows[use_guess]] = floor_y[torch.arange(n), guess][use_guess]
    return out.to(released.dtype), solved


#: An answer counts as solved only if the reverse sigmoid of the recovered probabilities gives it back to within
#: this max-abs difference. The answers are float32 (rounding <= 6e-8 per entry); measured on victims' answers,
#: the true preimages found reproduce them to < 1e-7 for most rows and up to ~1e-4 for a few whose top entry
#: sits near 1 - eps, where y -> logit(y) is steep. The near misses this rejects (a clip-floor guess, a root
#: of a wrong assignment; the old rule counted them) are 1e-3 .. 6e-2 off.
REPRODUCE_TOL = 1e-4


def _reproduces(y: Tensor, released: Tensor, beta: float, gamma: float, tol: float = REPRODUCE_TOL) -> Tensor:
    """(...,) bool: the defense's own forward pass on normalised `y` (..., K) gives back `released` (n, K)."""
    from ...defenses.deceptive import reverse_sigmoid  # the real defense's forward pass, not a re-derivation

    shape = y.shape
    flat = y.reshape(-1, shape[-1])
    again = reverse_sigmoid(flat.nan_to_num(0.5), beta, gamma).reshape(shape)
    target = released.reshape(released.shape[0], *([1] * (len(shape) - 2)), shape[-1])
    return torch.isfinite(y).all(-1) & ((again - target).abs().amax(-1) <= tol)


def _normalised(values: Tensor) -> Tensor:
    """Preimages -> probabilities. Entries at the clip floor become 0: the defense clips every y <= eps to eps,
    so 0 is as exact a preimage, and normalising eps's away from 1 would move a top entry at 1 - eps by ~K eps,
    which in logit space (where the defense works) is far from exact."""
    y = values.nan_to_num(0.0).clamp_min(0)
    y = torch.where(y <= _EPS * 1.01, torch.zeros_like(y), y)
    return y / y.sum(-1, keepdim=True).clamp_min(1e-300)


def _exact_score(y: Tensor, yr: Tensor, cost: Tensor, valid: Tensor, beta: float, gamma: float,
                 tol: float = REPRODUCE_TOL) -> Tensor:
    """Prior score of candidate solutions y (n, C, K): tier cost + entropy (lowest first); inf unless exact
    (they reproduce the answer within `tol`; inf tol: any valid candidate)."""
    entropy = -torch.special.xlogy(y, y).sum(-1)
    exact = valid & _reproduces(y, yr, beta, gamma, tol)
    return torch.where(exact, cost + entropy / (2 * math.log(max(yr.shape[-1], 2))), torch.full_like(cost, math.inf))


def _bracketed_roots(br: "_Branches", zs: Tensor, yr: Tensor, assign: Tensor, first: Tensor, beta: float,
                     gamma: float) -> Tensor:
    """Every assignment's root, all at once: Z bisected inside its first grid bracket, then polished: (n, C, K)."""
    za = zs.gather(1, first)  # (n, C)
    zb = zs.gather(1, (first + 1).clamp_max(zs.shape[1] - 1))

    def total(z: Tensor) -> tuple[Tensor, Tensor]:
        y = _values_at(br, z, yr, assign)  # (n, C, K)
        return y.sum(-1) - 1.0, y

    ra, _ = total(za)
    for _ in range(26):  # bisection: Z to ~1e-9 of its bracket (<= 4% wide); Newton polishes the rest
        zm = (za + zb) / 2
        rm, _ = total(zm)
        left = (ra * rm <= 0) | ~torch.isfinite(rm)
        zb = torch.where(left, zm, zb)
        za = torch.where(left, za, zm)
        ra = torch.where(left, ra, rm)
    z = (za + zb) / 2
    _, y = total(z)
    return _normalised(_polish(y, z[..., None] * yr[:, None, :], beta, gamma))


def _values_at(br: "_Branches", z: Tensor, yr: Tensor, assign: Tensor) -> Tensor:
    """Preimages selected by each assignment at its own normaliser: z (n, C), yr (n, K), assign (n, C, K)."""
    values = z[:, :, None] * yr[:, None, :]  # (n, C, K)
    out = torch.empty_like(values)
    for branch in range(3):  # only the branch each entry is assigned to (the bisection's hot loop)
        on = assign == branch
        out[on] = br.inverse(values[on], branch)
    return torch.where(yr[:, None, :] <= 0, torch.full_like(out, _EPS), out)


def _polish(y: Tensor, values: Tensor, beta: float, gamma: float, steps: int = 3) -> Tensor:
    """A few Newton steps on f(sigmoid(l)) = values in logit space (the lookup table is linear between points)."""
    inside = (y > _EPS * 1.01) & (y < 1 - _EPS * 1.01) & torch.isfinite(y)
    lg = torch.logit(y.nan_to_num(0.5).clamp(_EPS, 1 - _EPS))
    for _ in range(steps):
        p = torch.sigmoid(lg)
        s = torch.sigmoid(gamma * lg)
        f = p - beta * (s - 0.5)
        df = p * (1 - p) - beta * gamma * s * (1 - s)  # d f / d logit
        step = (f - values) / torch.where(df.abs() > 1e-12, df, torch.full_like(df, float("inf")))
        lg = lg - step.clamp(-0.5, 0.5)
    return torch.where(inside, torch.sigmoid(lg), y)


def _floor_values(yr: Tensor) -> Tensor:
    """Per row, the released value most likely to be the clip floor (victim probability <= 1e-9).

    On the reverse sigmoid's L branch f decreases, so tiny probabilities are released as the largest of the
    small answers, and all of them as the same value: the most repeated value (ties within 1e-6, the argmax
    excluded), or the largest non-argmax value when nothing repeats.
    """
    top = yr.argmax(-1, keepdim=True)
    masked = yr.scatter(-1, top, float("nan"))
    close = (masked[:, :, None] - masked[:, None, :]).abs() <= 1e-6 * masked[:, :, None].abs()
    ties = close.sum(-1).double()  # NaN rows compare False
    ties = ties + masked.nan_to_num(-1.0) * 1e-3  # break equal counts towards larger values
    return yr.gather(-1, ties.argmax(-1, keepdim=True)).squeeze(-1)


def _solve_at_floor(br: _Branches, yr: Tensor, assign: Tensor, beta: float, gamma: float,
                    tol: float = 2e-3) -> tuple[Tensor, Tensor]:
    """Every assignment's solution with the floor value (see :func:`_floor_values`) at f(eps), which pins
    Z = f(eps) / y'_floor: (probs (n, C, K), fits (n, C): the unpolished sum lies within `tol` of 1).
    Candidates, not yet solutions: the caller checks that they reproduce the answer.
    """
    z = (br.f_eps / _floor_values(yr).clamp_min(1e-300))[:, None]  # (n, 1)
    values = _assignment_values(br, z, yr, assign)[:, 0]  # (n, C, K)
    fits = (values.sum(-1) - 1.0).abs() < tol  # False where a preimage is missing (NaN)
    return _normalised(_polish(values, z[..., None] * yr[:, None, :], beta, gamma)), fits


def _roots_below_floor(br: _Branches, yr: Tensor, assign: Tensor, beta: float, gamma: float
                       ) -> tuple[Tensor, Tensor]:
    """Every assignment's root in [Z_floor (1 - 1e-2), Z_floor], Z_floor = f(eps) / y'_floor, bracketed on a
    geometric ladder and bisected: (probs (n, C, K), found (n, C))."""
    z_floor = br.f_eps / _floor_values(yr).clamp_min(1e-300)
    steps = torch.tensor([0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2], dtype=torch.float64)
    ladder = z_floor[:, None] * (1 - steps)  # (n, L), decreasing
    resid = _assignment_values(br, ladder, yr, assign).sum(-1) - 1.0  # (n, L, C)
    finite = torch.isfinite(resid)
    sign_change = (resid[:, :-1] * resid[:, 1:] <= 0) & finite[:, :-1] & finite[:, 1:]
    first = sign_change.double().argmax(1)  # (n, C)
    return _bracketed_roots(br, ladder, yr, assign, first, beta, gamma), sign_change.any(1)


def _assignment_values(br: _Branches, zs: Tensor, yr: Tensor, assign: Tensor) -> Tensor:
    """Preimages selected by each assignment: zs (n, G), yr (n, K), assign (n, C, K) -> (n, G, C, K).

    Entries the defense clipped to 0 are put at the clip floor (their preimage is unknown but tiny).
    """
    pre = br.preimages(zs[:, :, None] * yr[:, None, :])  # (n, G, K, 3)
    pre = torch.where(yr[:, None, :, None] <= 0, torch.full_like(pre, _EPS), pre)
    n, G, K, _ = pre.shape
    C = assign.shape[1]
    index = assign[:, None, :, :].expand(n, G, C, K)
    return pre[:, :, None, :, :].expand(n, G, C, K, 3).gather(-1, index[..., None]).squeeze(-1)


def _assignment_sums(br: _Branches, zs: Tensor, yr: Tensor, assign: Tensor) -> Tensor:
    """Row sums of the selected preimages, NaN where one of them does not exist: (n, G, C)."""
    return _assignment_values(br, zs, yr, assign).sum(-1)



__all__ = ["REPRODUCE_TOL", "invert_reverse_sigmoid"]
