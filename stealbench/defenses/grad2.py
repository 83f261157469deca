"""GRAD² (Mazeika, Li, Forsyth & Steinhardt, "How to Steer Your Adversary: Targeted and Efficient Model Stealing
Defenses with Gradient Redirection", ICML 2022).

What the paper does. The defender holds surrogate proxies standing in for the attacker's surrogate. For a query x
with clean posterior y, the attacker will take the step ``u(y') = -grad_theta CE(y', f_theta(x)) = J^T y'`` on the
released y', where J (K x P) is the Jacobian of the proxy's log-probabilities in its parameters. GRAD² releases
the y' that steers that step towards a defender-chosen direction t:

    y' = argmax_{y' in simplex, ||y' - y||_1 <= eps}  <J^T y', t>  =  argmax  c . y',   c = J t   (one value per class)

The objective is linear in y', so the optimum over the L1 ball intersected with the simplex moves eps/2 of mass
(at most 1 - y_j) onto the class j with the largest c, taken from the classes with the smallest c first: the
authors' sorting algorithm, here batched (a sort and a cumulative sum per row, no loop over samples). Targets
(`target`, named as in the authors' code):

- `min_ip` (default; the paper's untargeted GRAD², "MIN-IP"): t = -u(y), the step the clean answer would cause;
  the released answer minimises the inner product of the attacker's step with it. (A comment in the authors'
  get_queries.py calls the default target "the negative parameters of the student network"; their
  method_gradient_redirection uses the clean gradient, which is followed here.) c_i = -J_i J_i^T y_i is computed
  per sample with torch.func (vmap over vjp then jvp, `chunk_size` samples at a time).
- `all_ones` ("ALL-ONES"): t = 1; pushes every surrogate parameter up (the paper's demonstration of steering).
- `max_norm` ("MAX-NORM", in the authors' code): t = theta of the proxy; grows the surrogate's weights.
- `watermark` ("WATERMARK", the targeted backdoor variant): t = the step that teaches the proxy `watermark_count`
  trigger images (the defender's holdout images, else training images) with chosen labels.

The proxies (the authors: the victim's architecture trained on the attacker's transfer set with the victim's
labels, early-stopped at 10, 20, 30 and 40 epochs, one sampled at random per batch of 32 queries): here a freshly
initialised copy of the victim's network trained on the defender's own images (`train_x`, `train_size` of them)
with the victim's soft labels, snapshotted after each of `proxy_epochs` (cumulative) epochs; a keyed hash of the
query (`input_hash.py`) picks the snapshot that answers it. Their ALL-ONES_N style runs (one surrogate after N
epochs) are `--defense.proxy_epochs [N]`. By default the gradient is over all parameters
(`params: all`, the paper's GRAD²); `params: last` restricts it to the last parameterised layer (the authors'
"focused" variants and MAD's choice).

Deviations and guesses (the paper's defaults are the defaults wherever the framework allows):

- The attacker's transfer set is the attacker's data, which a defense here may not train on; the proxies train on
  the defender's training images instead (the victim's own labels, as an attacker distilling it would get).
- The authors compute the min-IP target from the gradient of the whole batch of queries (its mean loss), so an
  answer depends on the other queries in its batch; here each query's target is its own clean gradient, so answers
  do not depend on batching (a framework rule) and the objective is exactly per query.
- The authors draw a proxy at random per batch; here the keyed hash of each query chooses (deterministic, the same
  answer for the same query), as the framework requires of a defense that does not declare itself randomised.
- The watermark labels: the authors draw one trigger image from the test set and a uniformly random label; here
  triggers come from the defender's holdout (else training) images and each label is a random class other than
  the victim's prediction (a trigger labelled with its own class would teach nothing).
- The authors end with softmax(log(clamp(y', 1e-15))); here y' is clamped at 0 and renormalised, which keeps
  ||y' - y||_1 <= eps exactly.
- `epsilon` defaults to 0.5 (the paper sweeps eps; no single default is stated).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from .. import hookimpl
from ..errors import ConfigError, check_options
from .base import Defense, DefenseSetup
from .input_hash import InputHash
from .misinformation import freeze, trainable_copy

TARGETS = ("min_ip", "all_ones", "max_norm", "watermark")


def redirect(probs: Tensor, scores: Tensor, epsilon: float) -> Tensor:
    """argmax_{y' in simplex, ||y' - y||_1 <= epsilon} scores . y', row-wise and batched.

    Moves min(epsilon/2, 1 - y_j) of mass onto j = argmax scores, taken from the classes with the lowest scores
    first (an optimum of this linear program: each unit moved gains scores_j - scores_k >= 0 and costs 2 in L1).
    """
    y = probs.double()
    order = torch.argsort(scores.double(), dim=-1, stable=True)  # ascending: take from the front, give to the last
    ys = y.gather(-1, order)
    budget = torch.minimum(torch.full_like(ys[:, -1], epsilon / 2), 1 - ys[:, -1])
    before = ys.cumsum(-1) - ys
    take = torch.minimum((budget[:, None] - before).clamp_min(0), ys)
    take[:, -1] = 0
    moved = take.sum(-1)
    out = ys - take
    out[:, -1] += moved
    released = torch.empty_like(out).scatter_(-1, order, out).clamp_min(0)
    return (released / released.sum(-1, keepdim=True)).to(probs.dtype)


class GradientRedirection(Defense):
    """GRAD² (Mazeika et al. 2022): within an L1 ball, the answer that steers the attacker's gradient step."""

    def __init__(self, epsilon: float = 0.5,
                 target: Literal["min_ip", "all_ones", "max_norm", "watermark"] = "min_ip",
                 params: Literal["all", "last"] = "all", proxy_epochs: list[int] | None = None,
                 train_size: int | None = 10000, watermark_count: int = 1, chunk_size: int | None = 64) -> None:
        """
        Args:
            epsilon: L1 radius of the perturbation, ||y' - y||_1 <= epsilon (> 0).
            target: direction the attacker's step is steered to: min_ip (untargeted, the paper's GRAD²),
                all_ones, max_norm, watermark.
            params: proxy parameters the gradient is taken over: all (the paper) or last (the last layer).
            proxy_epochs: cumulative epochs at which proxy snapshots are kept (default [1, 2, 3, 4]; 0 keeps the
                untrained initialisation); a hash of each query picks the snapshot that answers it.
            train_size: defender training images the proxy trains on (null: all of them).
            watermark_count: trigger images of the watermark target.
            chunk_size: samples per vectorised per-sample gradient (memory; null: the whole batch).
        """
        super().__init__()
        proxy_epochs = [1, 2, 3, 4] if proxy_epochs is None else [int(e) for e in proxy_epochs]
        checks = [
            (epsilon > 0, f"defense.epsilon must be > 0 (the L1 radius), got {epsilon}"),
            (target in TARGETS, f"defense.target must be one of {', '.join(TARGETS)}; got {target!r}"),
            (params in ("all", "last"), f"defense.params must be one of all, last; got {params!r}"),
            (len(proxy_epochs) >= 1 and all(e >= 0 for e in proxy_epochs)
             and proxy_epochs == sorted(proxy_epochs),
             f"defense.proxy_epochs must be a non-empty ascending list of epochs >= 0, got {proxy_epochs}"),
            (train_size is None or train_size >= 10, f"defense.train_size must be >= 10 or null, got {train_size}"),
            (watermark_count >= 1, f"defense.watermark_count must be >= 1, got {watermark_count}"),
            (chunk_size is None or chunk_size >= 1, f"defense.chunk_size must be >= 1 or null, got {chunk_size}"),
        ]
        check_options(checks)
        self.epsilon = float(epsilon)
        self.target = target
        self.params = params
        self.proxy_epochs = proxy_epochs
        self.train_size = train_size
        self.watermark_count = int(watermark_count)
        self.chunk_size = chunk_size
        self.proxies = nn.ModuleList()
        self._hash: InputHash | None = None
        self._targets: list[dict[str, Tensor]] = []  # fixed directions (all but min_ip), one per proxy

    # -- setup ----------------------------------------------------------------------------------------------------
    def setup(self, context: DefenseSetup) -> None:
        g = context.generator
        chosen = torch.randperm(len(context.train_x), generator=g)
        if self.train_size is not None:
            chosen = chosen[: self.train_size]
        x = context.train_x[chosen]
        soft = _predict(context.victim, x, context.device).cpu()
        net, done = trainable_copy(context.victim, from_victim=False, generator=g), 0
        for epochs in self.proxy_epochs:
            if epochs > done:
                if context.train_model is None:
                    raise ConfigError("defense grad2 needs DefenseSetup.train_model to train its proxy; "
                                      "use --defense.proxy_epochs [0] for an untrained proxy")
                net = context.train_model(net, x, soft, epochs - done, log_name="defense_grad2_proxy").cpu().train()
                done = epochs
            self.proxies.append(freeze(copy.deepcopy(net)))
        self._hash = InputHash(x[0].numel(), g)
        self.to(context.device)
        if self.target != "min_ip":
            self._targets = [self._fixed_target(proxy, context) for proxy in self.proxies]

    def _chosen_params(self, proxy: nn.Module) -> dict[str, Tensor]:
        named = dict(proxy.named_parameters())
        if self.params == "all":
            return {k: v.detach() for k, v in named.items()}
        last = [m for m in proxy.modules() if any(True for _ in m.parameters(recurse=False))][-1]
        mine = {id(p) for p in last.parameters(recurse=False)}
        return {k: v.detach() for k, v in named.items() if id(v) in mine}

    def _fixed_target(self, proxy: nn.Module, context: DefenseSetup) -> dict[str, Tensor]:
        params = self._chosen_params(proxy)
        if self.target == "all_ones":
            return {k: torch.ones_like(v) for k, v in params.items()}
        if self.target == "max_norm":
            return {k: v.clone() for k, v in params.items()}
        # watermark: the step that teaches the proxy the trigger images with their chosen labels
        pool = context.holdout_x if context.holdout_x is not None and len(context.holdout_x) else context.train_x
        g = context.generator
        idx = torch.randperm(len(pool), generator=g)[: self.watermark_count]
        bx = pool[idx].to(context.device)
        k = context.num_classes
        own = _predict(context.victim, bx, context.device).argmax(-1).cpu()
        labels = (own + torch.randint(1, k, (len(bx),), generator=g)) % k  # any class but the victim's
        onehot = torch.nn.functional.one_hot(labels, k).to(context.device, torch.float32)
        _, pull = vjp(lambda p: self._log_probs(proxy, p, bx), params)
        return {key: v.detach() for key, v in pull(onehot)[0].items()}

    # -- answering ------------------------------------------------------------------------------------------------
    @staticmethod
    def _log_probs(proxy: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.log_softmax(functional_call(proxy, params, (x,), strict=False).float(), -1)

    def scores(self, x: Tensor, probs: Tensor, which: int) -> Tensor:
        """c = J t for each query (B, K): how much each class's mass in y' moves the attacker's step along t."""
        proxy = self.proxies[which]
        params = self._chosen_params(proxy)
        with torch.enable_grad():
            if self.target != "min_ip":
                target = {k: v.to(x.device) for k, v in self._targets[which].items()}
                return jvp(lambda p: self._log_probs(proxy, p, x), (params,), (target,))[1]

            def one(xi: Tensor, yi: Tensor) -> Tensor:
                f = lambda p: self._log_probs(proxy, p, xi[None])[0]  # noqa: E731
                _, pull = vjp(f, params)
                step = pull(yi)[0]  # u(y) = J^T y: the attacker's step on the clean answer
                return -jvp(f, (params,), (step,))[1]  # c = J t with t = -u(y)

            return vmap(one, chunk_size=self.chunk_size)(x, probs.float())

    @torch.no_grad()
    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if self._hash is None:
            raise RuntimeError("grad2 defense used before setup()")
        which = self._hash.choose(x, len(self.proxies))
        scores = torch.zeros(probs.shape, dtype=torch.float32, device=probs.device)
        for m in range(len(self.proxies)):  # a loop over proxies, not samples
            rows = (which == m).nonzero().flatten()
            if len(rows):
                scores[rows] = self.scores(x[rows].float(), probs[rows], m).to(scores.device)
        return redirect(probs, scores, self.epsilon)


def _predict(net: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    with torch.no_grad():
        return torch.cat([torch.softmax(net(xb.to(device)).float(), -1) for xb in x.split(4096)])


@hookimpl
def register_defenses(register):
    register("grad2", GradientRedirection)
