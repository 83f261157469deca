"""MAD: Maximizing Angular Deviation (Orekondy, Schiele & Fritz, "Prediction Poisoning: Towards Defenses Against
DNN Model Stealing Attacks", ICLR 2020).

An attacker who trains on the released probabilities y' follows the gradient ``a(y') = -G^T y'`` of the
cross-entropy, where ``G = d log F(x; w) / dw`` is the (K x D) Jacobian of its model's log-probabilities. MAD
releases, within a ball ``||y' - y|| <= epsilon`` on the simplex, the y' whose gradient points as far as possible
from the gradient of the clean answer y:

    max_{y'}  || G^T y' / ||G^T y'||  -  G^T y / ||G^T y|| ||^2      (= 2 - 2 cos(G^T y, G^T y'))

The defender does not know the attacker's model, so G is computed on a proxy surrogate built in ``setup()``.
Everything here depends on G only through the K x K Gram matrix ``M = G G^T``: ``<G^T u, G^T v> = u^T M v``.
With ``gradient="full"`` M is computed from the per-sample Jacobian over all proxy parameters (``torch.func``,
vmapped over the query batch, in chunks). With ``gradient="last_layer"`` only the final linear layer counts; its
Jacobian is ``(e_k - p) (x) [h; 1]`` for the proxy's probabilities p and features h, so
``M_kl = (delta_kl - p_k - p_l + ||p||^2) ||[h; 1]||^2`` and the angle depends on p alone.

The optimisation follows the authors' code (tribhuvanesh/prediction-poisoning, `defenses/victim/bb_mad.py`): the
objective is convex in y', so its maximum over the simplex is at a vertex. An *oracle* picks a target y* and y' is
the point on the segment from y to y* where the ball ends (their closed-form line search):

- ``oracle="objmax"`` (the default; their ``objmax=1``): y* is the vertex e_k whose own angular deviation
  (the objective evaluated at the vertex, not at the point released) is largest;
- ``oracle="surrogate"`` (their code's ``objmax=0``): the vertex maximising the unnormalised ``||G^T (e_k - y)||^2``;
- ``oracle="feasible"`` (stealbench's earlier heuristic, a deviation kept as a named option): every direction's
  feasible point is evaluated and the one of largest deviation released.

For the argmax-preserving variant their oracle searches vertex *subsets*: y* spreads its mass evenly over a set S
of classes that contains the top-1 c, with c upweighted by 1e-5 so that it stays the top-1; all 2^(K-1) sets when
K <= 10, else a greedy search that grows S one class at a time (the authors' cap of 1,024 evaluated sets). Every
point of the segment keeps c on top, so no margin is needed. Everything is batched over the query batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stealbench.defenses import Defense, DefenseSetup
from stealbench.errors import ConfigError, StealbenchError
from stealbench.models import build_net

#: the argmax-preserving variant keeps at least this share of the gap between the top-1 and any other class
_KEEP_GAP = 0.01
_TINY = 1e-12


def gram_last_layer(p: Tensor) -> Tensor:
    """Gram matrices (B, K, K) of the last-layer gradients, up to a positive per-row factor, from probabilities p."""
    sq = (p * p).sum(-1, keepdim=True).unsqueeze(-1)  # (B, 1, 1)
    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
    return eye - p.unsqueeze(-1) - p.unsqueeze(-2) + sq


#: the authors' upweighting of the top-1 in the argmax-preserving targets, and their exhaustive-search limit
_TOP_UPWEIGHT = 1e-5
_EXHAUSTIVE_MAX_CLASSES = 10
_GREEDY_MAX_SETS = 1024
ORACLES = ("objmax", "surrogate", "feasible")


def _distance(delta: Tensor, norm: str) -> Tensor:
    if norm == "l1":
        return delta.abs().sum(-1)
    if norm == "l2":
        return delta.norm(dim=-1)
    raise ConfigError(f"defense.norm must be l1 or l2, got {norm!r}")


def _scores(targets: Tensor, gram: Tensor, y: Tensor, oracle: str) -> Tensor:
    """The oracle's objective at each candidate target (B, C, K): larger is better. Float64."""
    my = torch.einsum("bkl,bl->bk", gram, y)
    s = (y * my).sum(-1, keepdim=True)  # y^T M y
    cross = torch.einsum("bck,bk->bc", targets, my)  # t^T M y
    quad = torch.einsum("bck,bkl,bcl->bc", targets, gram, targets)  # t^T M t
    if oracle == "surrogate":  # ||G^T t - G^T y||^2
        return quad - 2 * cross + s
    den = (s * quad.clamp_min(0)).sqrt()
    cos = torch.where(den > _TINY, cross / den.clamp_min(_TINY), torch.ones_like(cross))
    return 2 - 2 * cos  # ||u/|u| - v/|v|||^2


def _subset_targets(y: Tensor, members: Tensor) -> Tensor:
    """Targets spread evenly over each candidate class set (B, C, K bool), the top-1 upweighted by 1e-5."""
    top = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)[:, None, :]
    t = members.to(y.dtype) + _TOP_UPWEIGHT * top
    return t / t.sum(-1, keepdim=True)


def _best_target(y: Tensor, gram: Tensor, oracle: str, argmax_preserving: bool) -> Tensor:
    """The oracle's target y* (B, K) for each row."""
    b, k = y.shape
    if not argmax_preserving:
        eye = torch.eye(k, dtype=y.dtype, device=y.device)
        scores = _scores(eye.expand(b, k, k), gram, y, oracle)
        return eye[scores.argmax(-1)]  # the first best vertex, as their loop keeps it
    top = y.argmax(-1)
    if k <= _EXHAUSTIVE_MAX_CLASSES:
        codes = torch.arange(2**k, device=y.device)
        sets = (codes[:, None] >> torch.arange(k, device=y.device)) & 1  # (2^K, K)
        members = sets.bool()[None].expand(b, -1, -1)
        valid = members.gather(-1, top[:, None, None].expand(-1, 2**k, 1)).squeeze(-1)
        targets = _subset_targets(y, members)
        scores = _scores(targets, gram, y, oracle).masked_fill(~valid, -torch.inf)
        return targets[torch.arange(b), scores.argmax(-1)]
    # greedy: grow each row's set by the class whose addition scores best; keep the best set seen
    fixed = F.one_hot(top, k).bool()
    best_score = torch.full((b,), -torch.inf, dtype=y.dtype, device=y.device)
    best = _subset_targets(y, fixed[:, None, :])[:, 0]
    eye = torch.eye(k, dtype=torch.bool, device=y.device)
    evaluated = 0
    while evaluated < _GREEDY_MAX_SETS and not bool(fixed.all()):
        members = fixed[:, None, :] | eye[None]  # candidate k: the set plus class k
        targets = _subset_targets(y, members)
        scores = _scores(targets, gram, y, oracle).masked_fill(fixed, -torch.inf)
        value, pick = scores.max(-1)
        better = value > best_score
        best = torch.where(better[:, None], targets[torch.arange(b), pick], best)
        best_score = torch.where(better, value, best_score)
        fixed = fixed | F.one_hot(pick, k).bool()
        evaluated += k - int(fixed[0].sum()) + 1
    return best


def _feasible_point_perturb(y: Tensor, gram: Tensor, epsilon: float, norm: str, argmax_preserving: bool) -> Tensor:
    """stealbench's earlier heuristic (``oracle="feasible"``): each direction's feasible point, the best released."""
    k = y.shape[-1]
    eye = torch.eye(k, dtype=y.dtype, device=y.device)
    # distance of the full step e_k - y
    if norm == "l1":
        step_norm = 2.0 * (1.0 - y)  # |1 - y_k| + sum_{j != k} y_j
    else:
        step_norm = ((y * y).sum(-1, keepdim=True) - 2.0 * y + 1.0).clamp_min(0).sqrt()
    alpha = torch.where(step_norm > _TINY, epsilon / step_norm.clamp_min(_TINY), torch.zeros_like(y)).clamp(0, 1)
    if argmax_preserving:
        # Moving towards e_k (k != c, the top-1) by a: y'_c = (1 - a) y_c, y'_k = (1 - a) y_k + a, so with
        # d = y_c - y_k >= 0 the margin is y'_c - y'_k = d - a (1 + d), and
        #     d - a (1 + d) >= _KEEP_GAP d   <=>   a <= (1 - _KEEP_GAP) d / (1 + d).
        # At that bound the margin is exactly _KEEP_GAP d. Every other class j keeps (1 - a)(y_c - y_j) >=
        # _KEEP_GAP (y_c - y_j), as a <= (1 - _KEEP_GAP) / 2; moving towards e_c only widens the margins.
        # A tie (d = 0) gives a = 0: no move towards that class.
        top = y.argmax(-1, keepdim=True)
        d = (y.gather(-1, top) - y).clamp_min(0)
        bound = (1 - _KEEP_GAP) * d / (1.0 + d)
        is_top = torch.zeros_like(y, dtype=torch.bool).scatter_(-1, top, True)
        alpha = torch.where(is_top, alpha, torch.minimum(alpha, bound))
    my = torch.einsum("bkl,bl->bk", gram, y)  # M y
    s = (y * my).sum(-1, keepdim=True)  # y^T M y
    diag = torch.diagonal(gram, dim1=-2, dim2=-1)  # e_k^T M e_k
    # y'_k = y + alpha_k (e_k - y):  y^T M y'_k and y'_k^T M y'_k, for all k at once
    num = s + alpha * (my - s)
    quad = s + 2 * alpha * (my - s) + alpha.pow(2) * (diag - 2 * my + s)
    den = (s * quad.clamp_min(0)).sqrt()
    cos = torch.where(den > _TINY, num / den.clamp_min(_TINY), torch.ones_like(num))
    cos = torch.where(alpha > 0, cos, torch.ones_like(cos))  # no move, no deviation
    best = cos.argmin(-1, keepdim=True)
    a = alpha.gather(-1, best)
    return (1 - a) * y + a * eye[best.squeeze(-1)]


def mad_perturb(y: Tensor, gram: Tensor, epsilon: float, *, norm: str = "l1",
                argmax_preserving: bool = False, oracle: str = "objmax") -> Tensor:
    """The MAD answer for clean probabilities y (B, K) given gradient Gram matrices (B, K, K). Batched, float64.

    The oracle (module docstring) picks a target y*; the answer is ``(1 - a) y + a y*`` with the largest
    ``a`` in [0, 1] for which ``||a (y* - y)|| <= epsilon``.
    """
    if oracle not in ORACLES:
        raise ConfigError(f"defense.oracle must be one of {', '.join(ORACLES)}, got {oracle!r}")
    _distance(y[:0], norm)  # checks the norm's name
    y = y.double()
    gram = gram.double()
    if oracle == "feasible":
        released = _feasible_point_perturb(y, gram, epsilon, norm, argmax_preserving)
    else:
        target = torch.cat([_best_target(yb, gb, oracle, argmax_preserving)
                            for yb, gb in zip(y.split(256), gram.split(256))]) if len(y) else y.clone()
        length = _distance(target - y, norm)[:, None]
        a = torch.where(length > _TINY, epsilon / length.clamp_min(_TINY), torch.zeros_like(length)).clamp(0, 1)
        released = (1 - a) * y + a * target
    released = released.clamp_min(0)
    return released / released.sum(-1, keepdim=True)


class MAD(Defense):
    """MAD prediction poisoning (Orekondy et al. 2020): answers within an epsilon ball that mislead the gradient."""

    def __init__(
        self,
        epsilon: float = 0.5,
        norm: Literal["l1", "l2"] = "l1",
        argmax_preserving: bool = False,
        oracle: Literal["objmax", "surrogate", "feasible"] = "objmax",
        gradient: Literal["full", "last_layer"] = "last_layer",
        proxy: Literal["random", "trained"] = "random",
        proxy_arch: str = "cnn",
        proxy_epochs: int = 5,
        chunk_size: int = 0,
    ) -> None:
        """
        Args:
            epsilon: radius of the ball around the clean answer y (L1: in [0, 2]; L2: in [0, sqrt 2]).
            norm: `l1` (the paper's main setting) or `l2` distance between y and the released y'.
            argmax_preserving: keep the victim's top-1 class (MAD-argmax: no accuracy loss for benign users).
            oracle: how the target is chosen: `objmax` (the authors' `objmax` option: the vertex, or for
                MAD-argmax the vertex set, of largest angular deviation), `surrogate` (their unnormalised
                gradient distance), or `feasible` (stealbench's earlier heuristic: the best feasible point).
            gradient: `last_layer` (the authors' code: the gradient w.r.t. the proxy's final linear layer, closed
                form) or `full` (the per-sample Jacobian over all parameters, the paper's G in full; slow).
            proxy: the defender's stand-in for the attacker's model: `random` (freshly initialised, as the paper's
                default surrogate) or `trained` (distilled from the victim's answers on its training data).
            proxy_arch: architecture of the proxy (`stealbench list architectures`, or a timm name).
            proxy_epochs: training epochs for a `trained` proxy.
            chunk_size: queries per Jacobian computation in `full` mode (0: sized to ~256 MB).
        """
        super().__init__()
        if not 0 <= epsilon <= 2:
            raise ConfigError(f"defense.epsilon must lie in [0, 2], got {epsilon}")
        if norm not in ("l1", "l2"):
            raise ConfigError(f"defense.norm must be l1 or l2, got {norm!r}")
        if gradient not in ("full", "last_layer"):
            raise ConfigError(f"defense.gradient must be full or last_layer, got {gradient!r}")
        if proxy not in ("random", "trained"):
            raise ConfigError(f"defense.proxy must be random or trained, got {proxy!r}")
        if proxy_epochs < 1:
            raise ConfigError(f"defense.proxy_epochs must be >= 1, got {proxy_epochs}")
        self.epsilon = float(epsilon)
        self.norm = norm
        self.argmax_preserving = bool(argmax_preserving)
        self.preserves_argmax = self.argmax_preserving
        if oracle not in ORACLES:
            raise ConfigError(f"defense.oracle must be one of {', '.join(ORACLES)}, got {oracle!r}")
        self.oracle = oracle
        self.gradient = gradient
        self.proxy = proxy
        self.proxy_arch = proxy_arch
        self.proxy_epochs = int(proxy_epochs)
        self.chunk_size = int(chunk_size)
        self._proxy: nn.Module | None = None

    def setup(self, context: DefenseSetup) -> None:
        x = context.train_x
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims).tolist()
        std = x.std(dim=dims).clamp_min(1e-3).tolist()
        seed = int(torch.randint(2**31 - 1, (1,), generator=context.generator))
        with torch.random.fork_rng(devices=[]):  # initialise from the run's generator, leave global RNG alone
            torch.manual_seed(seed)
            net = build_net(self.proxy_arch, num_classes=context.num_classes, input_shape=context.input_shape,
                            mean=mean, std=std)
        if self.proxy == "trained":
            if context.train_model is None:
                raise StealbenchError("defense mad: proxy=trained needs DefenseSetup.train_model")
            victim = context.victim
            with torch.no_grad():
                targets = torch.cat([torch.softmax(victim(xb.to(context.device)), -1).cpu()
                                     for xb in x.split(1024)])
            net = context.train_model(net, x, targets, self.proxy_epochs)
        net = net.to(context.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self._proxy = net

    def gram(self, x: Tensor) -> Tensor:
        """Gram matrices (B, K, K) of the proxy's per-sample log-probability gradients for the images x."""
        if self._proxy is None:
            raise StealbenchError("defense mad: setup() was not called before the first query")
        proxy = self._proxy
        device = next(proxy.parameters()).device
        x = x.to(device, torch.float32)
        if self.gradient == "last_layer":
            with torch.no_grad():
                return gram_last_layer(torch.softmax(proxy(x), -1).double())
        from torch.func import functional_call, jacrev, vmap

        params = {name: p.detach() for name, p in proxy.named_parameters()}
        buffers = {name: b for name, b in proxy.named_buffers()}

        def log_probs(params: dict[str, Tensor], one: Tensor) -> Tensor:
            return torch.log_softmax(functional_call(proxy, (params, buffers), (one.unsqueeze(0),)), -1).squeeze(0)

        jacobian = vmap(jacrev(log_probs), in_dims=(None, 0))
        n_params = sum(p.numel() for p in params.values())
        k = proxy(x[:1]).shape[-1]
        chunk = self.chunk_size or max(1, (64 * 2**20) // max(1, k * n_params))
        grams = []
        for xb in x.split(chunk):
            jac = jacobian(params, xb)
            flat = torch.cat([j.flatten(2) for j in jac.values()], dim=2)  # (b, K, D)
            grams.append((flat @ flat.transpose(1, 2)).double())
        return torch.cat(grams)

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if len(probs) == 0:
            return probs.clone()
        gram = self.gram(x).to(probs.device)
        released = mad_perturb(probs, gram, self.epsilon, norm=self.norm, argmax_preserving=self.argmax_preserving,
                               oracle=self.oracle)
        released = released.to(probs.dtype)
        if self.argmax_preserving:
            # the kept margin (the 1e-5 upweight, or the feasible heuristic's _KEEP_GAP) can round away in float32
            # for near-ties of a few ulps:
            # those rows are released clean rather than with a changed top-1
            flipped = released.argmax(-1) != probs.argmax(-1)
            released = torch.where(flipped[:, None], probs, released)
        return released


class MADArgmax(MAD):
    """MAD-argmax (Orekondy et al. 2020): MAD that keeps the victim's top-1 class, so benign accuracy is intact."""

    preserves_argmax = True

    def __init__(
        self,
        epsilon: float = 0.5,
        norm: Literal["l1", "l2"] = "l1",
        oracle: Literal["objmax", "surrogate", "feasible"] = "objmax",
        gradient: Literal["full", "last_layer"] = "last_layer",
        proxy: Literal["random", "trained"] = "random",
        proxy_arch: str = "cnn",
        proxy_epochs: int = 5,
        chunk_size: int = 0,
    ) -> None:
        super().__init__(epsilon=epsilon, norm=norm, argmax_preserving=True, oracle=oracle, gradient=gradient,
                         proxy=proxy, proxy_arch=proxy_arch, proxy_epochs=proxy_epochs, chunk_size=chunk_size)
