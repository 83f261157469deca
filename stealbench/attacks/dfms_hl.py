"""DFMS-HL: data-free model stealing in a hard-label setting (Sanyal, Addepalli & Babu, CVPR 2022).

Hard labels only: whatever the run's label mode, the attack keeps nothing of an answer but its argmax (the
label mode's targets, `ctx.to_targets`, reduced to their argmax). The attacker owns a *proxy* set that shares no
classes with the victim: the attacker pool when it comes from another data set (``--pool_data fashion-mnist``
against an MNIST or digits victim), or synthetic shapes (stealbench/attacks/shapes.py) drawn from
``ctx.generator``. The stages, as in the paper and its code (val-iisc/Hard-Label-Model-Stealing):

1. **GAN on the proxy** (`pretrain_steps`, no queries): a generator and a DCGAN discriminator, the usual
   non-saturating BCE game (Adam 2e-4, betas (0.5, 0.999)).
2. **Clone initialisation** (`proxy_queries` counted queries): a set of proxy images and, `init_generated` of
   it (the code's 0.5 / 0.5 of --proxy_data_ratio and --dcgan_data_ratio), images of the proxy-trained
   generator, labelled by the victim's argmax; the clone (student) trains on them for `warmup_epochs` epochs.
3. **DivGAN** (`divgan_steps`, no queries): the generator takes steps on L_adv + lambda_div' L_div through that
   clone (the code's train_gen.py, d_l 10: `divgan_diversity_weight`); then a *fresh* clone is trained from
   scratch on the labelled proxy images and as many DivGAN images as the generated part of step 2 (counted
   queries; the code's --from_scratch with --div_gan_data_ratio 0.5 and --proxy_data_ratio 0.5).
4. **Alternating training** until the budget is spent, one batch per iteration: the generator's images are
   labelled by the victim (counted queries) and the clone takes one cross-entropy step on those hard labels;
   then the generator takes one step on  L_adv + lambda_div * L_div (+ lambda_ent * L_ent), where L_adv is the
   GAN loss against the discriminator (which keeps the images near the proxy distribution), L_div is the
   *class-diversity loss* sum_j a_j log a_j of a = the batch mean of the clone's softmax (minimising it
   maximises the entropy of the mean prediction, spreading the batch over the victim's classes) and L_ent the
   clone's mean per-sample entropy (the code's c_l, 0 by default); the clone stands in for the victim, so the
   generator's gradient needs no query; then the discriminator takes one step (real proxy batch vs the batch).
   With `proxy_every` k > 0, every k-th iteration adds one clone step on a batch of the labelled proxy set (the
   code's --use_proxy_data, off in the paper's alternating run).

Deviations, each named: the stages are counts of steps scaled to a CPU benchmark, not the code's epochs (200
DCGAN epochs, 100 DivGAN epochs, 150 alternating epochs over 50,000 images); `divgan_steps 0 --attack.init_generated
0` is this module's earlier pipeline (proxy images only, no DivGAN); the generator is the one DFME/MAZE share
(data_free.Generator: linear, then upsample + conv blocks with batch norm, tanh) instead of DCGAN's transposed
convolutions, sized to the victim's input; the paper's AutoAugment and pad-crop on the clone's batches are not
applied; `proxy_queries` None labels a tenth of the budget (capped by the proxy set's size for its proxy part; the
paper labels 50,000 CIFAR images of a budget in the millions); the discriminator is a two-block DCGAN
discriminator sized to the input.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
from ..pools import match_shape
from .base import Attack, AttackContext
from .data_free import Generator, QueryLedger, check_checkpoints, query
from .shapes import synthetic_shapes


class Discriminator(nn.Module):
    """DCGAN's discriminator scaled to the input: (conv 4x4 stride 2, LeakyReLU 0.2) -> (conv, BN, LeakyReLU)
    -> linear to one logit (BCE-with-logits: DCGAN's sigmoid + BCE, numerically safer)."""

    def __init__(self, input_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(2 * width * math.ceil(height / 4) * math.ceil(width_px / 4), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x * 2 - 1).flatten(1)).squeeze(1)  # DCGAN's images in [-1, 1]


def class_diversity_loss(logits: Tensor, floor: float = 1e-5) -> Tensor:
    """DFMS's class-diversity loss: sum_j a_j log(a_j + floor), a = the batch mean of softmax(logits) (the
    negative entropy of the mean prediction; the code's floor 1e-5). Minimised: the batch spreads over classes."""
    mean = torch.softmax(logits.float(), dim=-1).mean(dim=0)
    return (mean * (mean + floor).log()).sum()


def mean_entropy(logits: Tensor, floor: float = 1e-5) -> Tensor:
    """The mean per-sample entropy of softmax(logits) (the code's `classification_loss`, weight c_l)."""
    p = torch.softmax(logits.float(), dim=-1)
    return -(p * (p + floor).log()).sum(dim=-1).mean()


def hard_labels(ctx: AttackContext, x: Tensor) -> Tensor:
    """The victim's labels for `x` (counted queries): the argmax of the label mode's targets, nothing more."""
    return ctx.to_targets(query(ctx, x)).float().argmax(dim=-1)


class DFMSHL(Attack):
    """DFMS-HL (Sanyal et al. 2022): a proxy-trained GAN with the class-diversity loss, a hard-label clone."""

    def __init__(self, proxy: Literal["auto", "pool", "shapes"] = "auto", batch_size: int = 64,
                 latent_dim: int = 100, pretrain_steps: int = 200, proxy_queries: int | None = None,
                 warmup_epochs: int = 10, init_generated: float = 0.5, divgan_steps: int = 200,
                 divgan_diversity_weight: float = 10.0, diversity_weight: float = 500.0,
                 entropy_weight: float = 0.0, proxy_every: int = 0, lr_student: float = 0.01,
                 lr_generator: float = 2e-4, lr_discriminator: float = 2e-4,
                 num_checkpoints: int = 8, checkpoints: list[int] | None = None) -> None:
        """
        Args:
            proxy: the GAN's proxy set: `pool` (the attacker pool, which must come from another data set than the
                victim's: --pool_data), `shapes` (synthetic shapes; the run sends no pool), or `auto` (the pool
                when it comes from another data set, else shapes).
            batch_size: images per clone, generator and discriminator step (the code: 64).
            latent_dim: the generator's noise size (DCGAN's nz: 100).
            pretrain_steps: GAN steps on the proxy before any query (the paper: 200 epochs of DCGAN).
            proxy_queries: images labelled by the victim to initialise the clone, proxy images and generated
                ones (None: a tenth of the budget, its proxy part capped by the proxy set); 0 skips the stage.
            warmup_epochs: clone epochs on the labelled initial set (and on the DivGAN retraining set).
            init_generated: the share of the initial set drawn from the proxy-trained generator (the code: 0.5);
                0: proxy images only.
            divgan_steps: DivGAN generator steps on L_adv + lambda_div' L_div through the initial clone (no
                queries), after which a fresh clone trains on the labelled proxy images and as many DivGAN images
                as the initial set's generated part (counted); 0: no DivGAN stage.
            divgan_diversity_weight: lambda_div' of the DivGAN stage (the code's d_l: 10).
            diversity_weight: lambda_div (the code's d_l: 500 in the alternating stage).
            entropy_weight: lambda_ent, weight of the clone's mean per-sample entropy (the code's c_l: 0).
            proxy_every: every k-th iteration one more clone step on the labelled proxy set (0: off, the paper).
            lr_student: the clone's SGD learning rate (momentum 0.9, weight decay 5e-4, cosine over the
                alternating iterations; the code's 0.01).
            lr_generator: the generator's Adam learning rate (betas 0.5, 0.999: DCGAN's 2e-4).
            lr_discriminator: the discriminator's, likewise.
            num_checkpoints: points of the budget curve, a doubling sequence of query counts ending at the budget.
            checkpoints: the curve's query counts instead (the budget is always added as the last).
        """
        ints = {"batch_size": (batch_size, 1), "latent_dim": (latent_dim, 1), "pretrain_steps": (pretrain_steps, 0),
                "warmup_epochs": (warmup_epochs, 0), "divgan_steps": (divgan_steps, 0),
                "proxy_every": (proxy_every, 0), "num_checkpoints": (num_checkpoints, 1)}
        if proxy_queries is not None:
            ints["proxy_queries"] = (proxy_queries, 0)
        for option, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"attack.{option} must be an integer >= {low}, got {value!r}")
        if not (isinstance(init_generated, (int, float)) and not isinstance(init_generated, bool)
                and 0 <= init_generated <= 1):
            raise ConfigError(f"attack.init_generated must be a number in [0, 1], got {init_generated!r}")
        for option, value, positive in (("diversity_weight", diversity_weight, False),
                                        ("divgan_diversity_weight", divgan_diversity_weight, False),
                                        ("entropy_weight", entropy_weight, False),
                                        ("lr_student", lr_student, True), ("lr_generator", lr_generator, True),
                                        ("lr_discriminator", lr_discriminator, True)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
                    and (value > 0 or not positive)):
                raise ConfigError(f"attack.{option} must be a finite number {'> 0' if positive else '>= 0'}, "
                                  f"got {value!r}")
        if proxy not in ("auto", "pool", "shapes"):
            raise ConfigError(f"attack.proxy must be auto, pool or shapes, got {proxy!r}")
        self.proxy, self.batch_size, self.latent_dim = proxy, batch_size, latent_dim
        self.pretrain_steps, self.proxy_queries, self.warmup_epochs = pretrain_steps, proxy_queries, warmup_epochs
        self.divgan_steps, self.diversity_weight, self.entropy_weight = divgan_steps, diversity_weight, entropy_weight
        self.init_generated, self.divgan_diversity_weight = float(init_generated), divgan_diversity_weight
        self.proxy_every, self.lr_student, self.lr_generator = proxy_every, lr_student, lr_generator
        self.lr_discriminator, self.num_checkpoints = lr_discriminator, num_checkpoints
        self.checkpoints = sorted({int(c) for c in checkpoints}) if checkpoints else None
        self._report: dict[str, float] = {}

    @property
    def needs_pool(self) -> bool:  # type: ignore[override]
        """The run sends the attacker pool only where the proxy may be the pool."""
        return self.proxy != "shapes"

    # ---------------------------------------------------------------------------------------------- checks
    def _plan(self, budget: int, proxy_size: int | None = None) -> tuple[int, int, int]:
        """(proxy, generated, divgan): the victim-labelled images of the initial set's two parts and of the
        DivGAN retraining set; `proxy_size` caps the proxy part (None: shapes, no cap)."""
        initial = budget // 10 if self.proxy_queries is None else self.proxy_queries
        generated = round(self.init_generated * initial)
        proxy = initial - generated if proxy_size is None else min(initial - generated, proxy_size)
        return proxy, generated, generated if self.divgan_steps else 0

    def validate(self, *, budget: int, num_classes: int, pool_size: int) -> None:
        check_checkpoints(self.checkpoints, budget)
        proxy = sum(self._plan(budget))
        need = proxy + self.batch_size
        if budget < need:
            what = f"{proxy} initial and DivGAN queries + " if proxy else ""
            raise ConfigError(f"budget {budget} is too small for DFMS-HL: {what}one student batch of "
                              f"{self.batch_size} = {need} queries. Raise --budget or lower --attack.batch_size")

    def _proxy_source(self, ctx: AttackContext) -> Tensor | None:
        """The proxy images (converted to the victim's input shape), or None for synthetic shapes."""
        foreign = ctx.pool_labels is not None and len(ctx.pool_x) > 0
        if self.proxy == "shapes" or (self.proxy == "auto" and not foreign):
            return None
        if not foreign:
            raise ConfigError("attack.proxy pool needs a pool from another data set than the victim's (the proxy "
                              "must share no classes with it): give --pool_data, or use --attack.proxy shapes")
        x = ctx.pool_x
        if x.dim() != 4:
            raise ConfigError(f"DFMS-HL proxy: images must be shaped (N, C, H, W), got {tuple(x.shape)}")
        try:
            return match_shape(x.float(), tuple(ctx.input_shape)).clamp(0, 1)
        except ConfigError as err:
            raise ConfigError(f"DFMS-HL proxy: {err}".replace("pool_data: ", "")) from None

    # ---------------------------------------------------------------------------------------------- the game
    def run(self, ctx: AttackContext) -> nn.Module:
        self.validate(budget=ctx.oracle.remaining, num_classes=ctx.num_classes, pool_size=len(ctx.pool_x))
        device, g, shape = ctx.device, ctx.generator, tuple(ctx.input_shape)
        source = self._proxy_source(ctx)

        def real_batch(n: int) -> Tensor:
            if source is None:
                return synthetic_shapes(n, shape, g).to(device)
            return source[torch.randint(0, len(source), (n,), generator=g)].to(device)

        gen = ctx.new_network(lambda: Generator(self.latent_dim, shape, "tanh", affine_out=True), "generator")
        disc = ctx.new_network(lambda: Discriminator(shape), "discriminator")
        student = ctx.new_surrogate().to(device)
        adam = dict(optimizer="adam", weight_decay=0.0, schedule="constant")
        opt_g = ctx.optimizer(gen.parameters(), lr=self.lr_generator, **adam)
        opt_d = ctx.optimizer(disc.parameters(), lr=self.lr_discriminator, **adam)
        for opt in (opt_g, opt_d):
            for group in opt.optimizer.param_groups:
                group["betas"] = (0.5, 0.999)  # DCGAN's
        opt_s = ctx.optimizer(student.parameters(), optimizer="sgd", lr=self.lr_student, momentum=0.9,
                              nesterov=False, weight_decay=5e-4, schedule="constant")
        ledger = QueryLedger(ctx.oracle.budget, self.num_checkpoints, self.checkpoints)
        ledger.points = [p for p in ledger.points if p > ctx.oracle.used] or [ctx.oracle.budget]
        counts = {"pretrain": 0, "warmup": 0, "divgan": 0, "retrain": 0, "alternating": 0, "proxy_replay": 0}

        # 1. the GAN on the proxy, no queries
        for _ in range(self.pretrain_steps):
            self._gan_step(ctx, gen, disc, None, opt_g, opt_d, real_batch, 0.0)
            counts["pretrain"] += 1
        # 2. the clone on labelled proxy images and images of the proxy-trained generator
        n_proxy, n_gen, n_div = self._plan(ctx.oracle.remaining, None if source is None else len(source))
        if source is None:
            proxy_x = synthetic_shapes(n_proxy, shape, g).to(device)
        else:
            proxy_x = source[torch.randperm(len(source), generator=g)[:n_proxy]].to(device)
        proxy_y = self._labels(ctx, proxy_x)
        ledger.add("proxy", n_proxy)
        gen_x = self._generated(ctx, gen, n_gen)
        gen_y = self._labels(ctx, gen_x)
        ledger.add("initial_generated", n_gen)
        counts["warmup"] += self._train_clone(ctx, student, opt_s, torch.cat([proxy_x, gen_x]),
                                              torch.cat([proxy_y, gen_y]))
        if ledger.due(ctx.oracle.used):
            ledger.checkpoint(ctx, student)
        # 3. DivGAN: the generator spreads over the initial clone's classes (no queries), then a fresh clone
        for _ in range(self.divgan_steps):
            self._gan_step(ctx, gen, disc, student, opt_g, opt_d, real_batch, self.divgan_diversity_weight)
            counts["divgan"] += 1
        if n_div:
            div_x = self._generated(ctx, gen, n_div)
            div_y = self._labels(ctx, div_x)
            ledger.add("divgan", n_div)
            student = ctx.new_surrogate().to(device)
            opt_s = ctx.optimizer(student.parameters(), optimizer="sgd", lr=self.lr_student, momentum=0.9,
                                  nesterov=False, weight_decay=5e-4, schedule="constant")
            counts["retrain"] += self._train_clone(ctx, student, opt_s, torch.cat([proxy_x, div_x]),
                                                   torch.cat([proxy_y, div_y]))
            if ledger.due(ctx.oracle.used):
                ledger.checkpoint(ctx, student)
        # 4. alternating: hard labels of the generator's batch, a clone step, a generator and a discriminator step
        iterations = max(1, ctx.oracle.remaining // self.batch_size)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s.optimizer, T_max=iterations)
        done, last_div = 0, float("nan")
        while ctx.oracle.remaining > 0:
            n = min(self.batch_size, ctx.oracle.remaining)
            gen.train()
            z = torch.randn(n, self.latent_dim, generator=g).to(device)
            with opt_g.autocast():
                a = gen(z)
            x = gen.activate(a.float())
            labels = hard_labels(ctx, x.detach())
            ledger.add("generated", n)
            student.train()
            self._student_step(student, opt_s, x.detach(), labels)
            if self.proxy_every and n_proxy and (done + 1) % self.proxy_every == 0:
                idx = torch.randint(0, n_proxy, (min(self.batch_size, n_proxy),), generator=g).to(device)
                self._student_step(student, opt_s, proxy_x[idx], proxy_y[idx])
                counts["proxy_replay"] += 1
            last_div = self._gan_step(ctx, gen, disc, student, opt_g, opt_d, real_batch, self.diversity_weight,
                                      fake=x)
            counts["alternating"] += 1
            done += 1
            cosine.step()
            if ledger.due(ctx.oracle.used):
                ledger.checkpoint(ctx, student)
        ledger.finish(ctx, student)
        self._report = {**{f"queries/{k}": float(ledger.counts.get(k, 0))
                           for k in ("proxy", "initial_generated", "divgan", "generated")},
                        "iterations": float(done), "proxy/shapes": float(source is None),
                        "student_steps": float(opt_s.steps), "generator_steps": float(opt_g.steps),
                        "discriminator_steps": float(opt_d.steps), "diversity_loss/last": last_div,
                        **{f"steps/{k}": float(v) for k, v in counts.items()}}
        return student

    def _generated(self, ctx: AttackContext, gen: Generator, n: int) -> Tensor:
        """`n` images of the generator (no graph), in batches of the batch size."""
        with torch.no_grad():
            parts = [gen.activate(gen(torch.randn(k, self.latent_dim, generator=ctx.generator).to(ctx.device)
                                      ).float()) for k in _chunks(n, self.batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, *ctx.input_shape, device=ctx.device)

    @staticmethod
    def _labels(ctx: AttackContext, x: Tensor) -> Tensor:
        """The victim's hard labels for `x` (counted queries), in chunks of 4096 images."""
        if not len(x):
            return torch.empty(0, dtype=torch.long, device=x.device)
        return torch.cat([hard_labels(ctx, xb) for xb in x.split(4096)])

    def _train_clone(self, ctx: AttackContext, student: nn.Module, opt_s, x: Tensor, y: Tensor) -> int:
        """`warmup_epochs` epochs of clone steps on (x, y); returns the steps taken."""
        student.train()
        steps = 0
        for _ in range(self.warmup_epochs if len(x) else 0):
            for idx in torch.randperm(len(x), generator=ctx.generator).split(self.batch_size):
                idx = idx.to(x.device)
                self._student_step(student, opt_s, x[idx], y[idx])
                steps += 1
        return steps

    def _student_step(self, student: nn.Module, opt_s, x: Tensor, labels: Tensor) -> None:
        with opt_s.autocast():
            logits = student(x)
        opt_s.step(F.cross_entropy(logits.float(), labels))

    def _gan_step(self, ctx: AttackContext, gen: Generator, disc: Discriminator, student: nn.Module | None,
                  opt_g, opt_d, real_batch, diversity_weight: float, fake: Tensor | None = None) -> float:
        """One generator step (L_adv, plus the clone's diversity and entropy terms when `student` is given) and
        one discriminator step; `fake`: the batch already generated (with its graph), else a fresh one. Returns
        the class-diversity loss (NaN without a student)."""
        if fake is None:
            z = torch.randn(self.batch_size, self.latent_dim, generator=ctx.generator).to(ctx.device)
            with opt_g.autocast():
                fake = gen.activate(gen(z).float())
        disc.train()
        with opt_d.autocast():
            out = disc(fake).float()
        loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        div = torch.tensor(float("nan"))
        if student is not None:
            student.eval()
            student.requires_grad_(False)  # the clone stands in for the victim: it is not trained here
            try:
                with opt_g.autocast():
                    logits = student(fake).float()
            finally:
                student.requires_grad_(True)
            div = class_diversity_loss(logits)
            loss = loss + diversity_weight * div
            if self.entropy_weight:
                loss = loss + self.entropy_weight * mean_entropy(logits)
        opt_g.step(loss)
        real = real_batch(len(fake))
        with opt_d.autocast():
            d_real, d_fake = disc(real).float(), disc(fake.detach()).float()
        opt_d.step(F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                   + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        return float(div.detach())

    def report(self) -> dict[str, float]:
        return dict(self._report)


def _chunks(n: int, size: int) -> list[int]:
    return [min(size, n - i) for i in range(0, n, size)]


@hookimpl
def register_attacks(register):
    register("dfms-hl", DFMSHL)
