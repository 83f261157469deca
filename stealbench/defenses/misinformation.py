"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020), set up fairly.

An out-of-distribution detector scores every query; in-distribution queries get the victim's answer, suspected
out-of-distribution ones (the attacker's synthetic or surrogate-data queries) get, smoothly, the answer of a
misinformation model trained to be wrong:

    y' = (1 - a) * y + a * y_mis,    a = sigmoid(nu * (tau - msp(x)))

msp is the detector's max-softmax probability. `setup()` runs on the defender's side and trains both models with
`DefenseSetup.train_model` (the run's Lightning trainer). What trains what:

- The victim's training images (`train_x`, the defender's own data; `train_size` of them, drawn with the defense's
  generator) train both models. Nothing the attacker can query is used.
- The detector (`detector: oe`): a copy of the victim fine-tuned with Outlier Exposure (Hendrycks et al. 2019):
  those images with their one-hot labels plus `outlier_weight` outliers per image with the uniform distribution as
  target. `detector: victim` uses the victim's own max-softmax instead (no training, no outliers).
- The misinformation model (`mis_objective: paper`): a copy of the victim trained on the same images to minimise
  the paper's -log(1 - p_y(x)), y the true label: the true class's probability is driven to 0, and where the mass
  goes is left to the model. `mis_objective: derangement` (kept for comparison, see
  bench/misinformation_objective.py) instead trains with cross-entropy towards one fixed wrong class per class, a
  random derangement.
- tau (`tau: null`) is the `benign_flag_rate` quantile of the detector's scores on `DefenseSetup.holdout_x`:
  benign images of the victim's task that neither the victim nor either model trained on (the data set's
  defender holdout, `--data.holdout_fraction`), so a benign user is flagged at about that rate. Without a holdout,
  give `tau` explicitly.

Outliers (offline, never the attacker's): `outlier_data: patches` crops random patches of scikit-learn's two
bundled photographs (`load_sample_images`: china.jpg, flower.jpg), resized to the input shape; a registered
data-set key loads that set's `outlier_part` (`train` or `test`) through `DefenseSetup.load_dataset` (from
`outlier_root`), resized to the input shape. `outlier_data: auto` is `fashion-mnist` for 28x28 grey victims and
`patches` otherwise. The framework refuses (ConfigError naming both sets) outliers that share images with the
attacker's pool: with `--pool_data fashion-mnist` (the attacker queries Fashion-MNIST training images), the
default Fashion-MNIST training outliers are refused; use `--defense.outlier_part test` (Fashion-MNIST test images,
which the attacker never sees) or `--defense.outlier_data patches`.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError, check_options
from .base import Defense, DefenseSetup


def sample_image_patches(n: int, input_shape: tuple[int, int, int], generator: torch.Generator,
                         patch: int = 64) -> Tensor:
    """`n` random patch x patch crops of scikit-learn's bundled photos, resized to `input_shape`, in [0, 1]."""
    from sklearn.datasets import load_sample_images  # bundled with scikit-learn: no download

    images = [torch.tensor(img, dtype=torch.float32).permute(2, 0, 1) / 255.0 for img in load_sample_images().images]
    channels, height, width = input_shape
    per_image = [n // len(images) + (1 if i < n % len(images) else 0) for i in range(len(images))]
    crops = []
    for img, count in zip(images, per_image):
        _, h, w = img.shape
        top = torch.randint(0, h - patch, (count,), generator=generator)
        left = torch.randint(0, w - patch, (count,), generator=generator)
        rows = top[:, None] + torch.arange(patch)[None, :]  # (count, patch)
        cols = left[:, None] + torch.arange(patch)[None, :]
        crop = img[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (count, 3, patch, patch)
        crops.append(crop)
    x = torch.cat(crops)
    if channels == 1:
        x = x.mean(1, keepdim=True)
    x = F.interpolate(x, size=(height, width), mode="area")
    # random contrast/brightness so that outliers are not all mid-grey
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    flip = torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5
    return torch.where(flip, 1 - x, x).clamp(0, 1)


def reset_parameters(net: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise every submodule that can; with `generator`, from a seed drawn from it (global RNG untouched)."""
    if generator is None:
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return net
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return reset_parameters(net)


def trainable_copy(victim: nn.Module, from_victim: bool = True, generator: torch.Generator | None = None) -> nn.Module:
    """A CPU copy of the victim's network in train mode: its weights, or (from_victim False) re-initialised."""
    net = copy.deepcopy(victim).cpu().train()  # the victim is frozen in eval mode; its copies train
    for p in net.parameters():
        p.requires_grad_(True)
    return net if from_victim else reset_parameters(net, generator)


def freeze(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_outliers(context: DefenseSetup, n: int, data: str = "auto", part: str = "train",
                  root: str | None = "../shared/data") -> Tensor:
    """`n` outlier images shaped like the victim's inputs, never from the attacker's pool (see the module doc)."""
    from ..pools import match_shape

    key = ("fashion-mnist" if tuple(context.input_shape) == (1, 28, 28) else "patches") if data == "auto" else data
    if key == "patches":
        return sample_image_patches(n, tuple(context.input_shape), context.generator)
    if context.load_dataset is None:
        raise ConfigError(f"defense.outlier_data {key!r} needs DefenseSetup.load_dataset; "
                          "use --defense.outlier_data patches where no data set can be loaded")
    try:
        x = _load_part(context, key, part, root)
    except ConfigError as exc:  # e.g. the framework's refusal: these images are in the attacker's pool
        fixes = ["--defense.outlier_data patches (scikit-learn sample photos)"]
        if part == "train":
            fixes.insert(0, f"--defense.outlier_part test ({key}'s test images)")
        raise ConfigError(f"defense.outlier_data {key!r} with defense.outlier_part {part!r}: "
                          f"{exc}. Outliers must be images the attacker cannot query; to fix, use "
                          + " or ".join(fixes)) from exc
    idx = torch.randperm(len(x), generator=context.generator)[:n]
    return match_shape(x[idx].float(), tuple(context.input_shape))


def _load_part(context: DefenseSetup, key: str, part: str, root: str | None) -> Tensor:
    if root is not None:
        try:
            return context.load_dataset(key, part=part, root=root)[0]
        except (TypeError, ConfigError) as exc:
            # only "this data set takes no `root`" (e.g. digits) retries; a refusal must surface
            if not (isinstance(exc, TypeError) or isinstance(exc.__cause__, TypeError)):
                raise
    return context.load_dataset(key, part=part)[0]


def misinformation_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The paper's objective, mean of -log(1 - p_y(x)), with `targets` one-hot in the true class y.

    Computed as -(logsumexp over the other classes - logsumexp over all), which stays finite as p_y -> 1
    (where 1 - p_y underflows). For soft targets t it is -log(1 - sum_j t_j p_j), the same identity.
    """
    others = logits.float() + torch.log1p(-targets.float().clamp(max=1.0))  # -inf at the true class
    return -(torch.logsumexp(others, -1) - torch.logsumexp(logits.float(), -1)).mean()


class AdaptiveMisinformation(Defense):
    """Adaptive Misinformation (Kariyappa & Qureshi 2020): mix in a wrong model's answer as queries look OOD."""

    def __init__(self, tau: float | None = None, benign_flag_rate: float = 0.05, nu: float = 100.0,
                 detector: Literal["oe", "victim"] = "oe", outlier_data: str = "auto",
                 outlier_part: Literal["train", "test"] = "train", outlier_root: str | None = "../shared/data",
                 epochs: int = 2, train_size: int | None = 10000, outlier_weight: float = 0.5,
                 from_victim: bool = True, mis_objective: Literal["paper", "derangement"] = "paper") -> None:
        """
        Args:
            tau: OOD threshold on the detector's max-softmax probability; null calibrates it on the defender's
                holdout (benign images nothing here trained on) so that `benign_flag_rate` of them fall below.
            benign_flag_rate: share of the holdout images whose score falls below the calibrated tau.
            nu: sharpness of the switch a = sigmoid(nu * (tau - msp)).
            detector: `oe` (victim copy fine-tuned with Outlier Exposure) or `victim` (its own max-softmax).
            outlier_data: `auto`, `patches` (scikit-learn sample-photo patches) or a registered data-set key.
            outlier_part: which part of a data-set key to use as outliers, `train` or `test`; the framework
                refuses a part that shares images with the attacker's pool.
            outlier_root: where file-based outlier data sets live (passed as their `root`; null: not passed).
            epochs: training epochs of the detector and of the misinformation model.
            train_size: victim training images used for that training (null: all of them).
            outlier_weight: outliers per in-distribution image in the OE training set.
            from_victim: start both models from the victim's weights (else from a fresh initialisation).
            mis_objective: `paper` (minimise -log(1 - p_true)) or `derangement` (cross-entropy towards a fixed
                wrong class per class).
        """
        super().__init__()
        checks = [
            (tau is None or 0.0 < tau <= 1.0, f"defense.tau must be in (0, 1] or null, got {tau}"),
            (0.0 < benign_flag_rate < 1.0, f"defense.benign_flag_rate must be in (0, 1), got {benign_flag_rate}"),
            (nu > 0, f"defense.nu must be > 0, got {nu}"),
            (detector in ("oe", "victim"), f"defense.detector must be one of oe, victim; got {detector!r}"),
            (outlier_part in ("train", "test"),
             f"defense.outlier_part must be one of train, test; got {outlier_part!r}"),
            (epochs >= 1, f"defense.epochs must be >= 1, got {epochs}"),
            (train_size is None or train_size >= 10, f"defense.train_size must be >= 10 or null, got {train_size}"),
            (outlier_weight > 0, f"defense.outlier_weight must be > 0, got {outlier_weight}"),
            (mis_objective in ("paper", "derangement"),
             f"defense.mis_objective must be one of paper, derangement; got {mis_objective!r}"),
        ]
        check_options(checks)
        self.tau = tau
        self.benign_flag_rate = benign_flag_rate
        self.nu = nu
        self.detector = detector
        self.outlier_data = outlier_data
        self.outlier_part = outlier_part
        self.outlier_root = outlier_root
        self.epochs = epochs
        self.train_size = train_size
        self.outlier_weight = outlier_weight
        self.from_victim = from_victim
        self.mis_objective = mis_objective
        self.register_buffer("_threshold", torch.tensor(float(tau) if tau is not None else 0.5))
        self.register_buffer("_mixed_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_flagged", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_count", torch.zeros((), dtype=torch.float64))
        self.ood_net: nn.Module | None = None
        self.mis_net: nn.Module | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def outlier_key(self, context: DefenseSetup) -> str:
        if self.outlier_data == "auto":
            return "fashion-mnist" if tuple(context.input_shape) == (1, 28, 28) else "patches"
        return self.outlier_data

    def load_outliers(self, context: DefenseSetup, n: int) -> Tensor:
        """`n` outlier images shaped like the victim's inputs, never from the attacker's pool."""
        return load_outliers(context, n, self.outlier_data, self.outlier_part, self.outlier_root)

    @staticmethod
    def derangement(k: int, generator: torch.Generator) -> Tensor:
        """A random permutation of range(k) without fixed points (k >= 2): a shuffled cyclic shift."""
        order = torch.randperm(k, generator=generator)
        mapping = torch.empty(k, dtype=torch.long)
        mapping[order] = order.roll(-1)
        return mapping

    def _copy_victim(self, context: DefenseSetup) -> nn.Module:
        return trainable_copy(context.victim, self.from_victim)

    @staticmethod
    def _freeze(net: nn.Module) -> nn.Module:
        return freeze(net)

    def setup(self, context: DefenseSetup) -> None:
        if context.train_model is None:
            raise ConfigError("the misinformation defense needs DefenseSetup.train_model to train its models")
        if self.tau is None and (context.holdout_x is None or len(context.holdout_x) == 0):
            raise ConfigError(
                "defense.tau null calibrates tau on DefenseSetup.holdout_x (benign images the victim never trained "
                "on), but this setup has no holdout; give a fixed threshold (e.g. --defense.tau 0.9) or run with a "
                "data set that keeps a defender holdout (--data.holdout_fraction > 0)")
        g = context.generator
        k = context.num_classes
        # the defender's own data trains both models; calibration below uses the holdout, never these images
        chosen = torch.randperm(len(context.train_x), generator=g)
        if self.train_size is not None:
            chosen = chosen[: self.train_size]
        x, y = context.train_x[chosen], context.train_y[chosen]
        onehot = F.one_hot(y, k).float()
        # outliers first: a refused outlier set fails before any training time is spent
        outliers = (self.load_outliers(context, max(1, int(len(x) * self.outlier_weight)))
                    if self.detector == "oe" else None)

        if self.mis_objective == "paper":
            # -log(1 - p_y): push the true class's probability to 0, no particular wrong class imposed
            mis_net = context.train_model(self._copy_victim(context), x, onehot, self.epochs,
                                          log_name="defense_misinformation", loss=misinformation_loss)
        else:
            wrong = F.one_hot(self.derangement(k, g)[y], k).float()
            mis_net = context.train_model(self._copy_victim(context), x, wrong, self.epochs,
                                          log_name="defense_misinformation")
        self.mis_net = self._freeze(mis_net)

        if outliers is not None:
            uniform = torch.full((len(outliers), k), 1.0 / k)
            self.ood_net = context.train_model(self._copy_victim(context), torch.cat([x, outliers]),
                                               torch.cat([onehot, uniform]), self.epochs, log_name="defense_oe")
        else:
            self.ood_net = copy.deepcopy(context.victim)
        self._freeze(self.ood_net)
        self.to(context.device)

        if self.tau is None:
            scores = torch.cat([self.score(xb.to(context.device)).cpu() for xb in context.holdout_x.split(4096)])
            self._threshold.fill_(float(torch.quantile(scores.double(), self.benign_flag_rate)))

    def reset(self) -> None:
        """Zero the counters behind report() (the answers themselves do not depend on earlier queries)."""
        self._mixed_sum.zero_()
        self._flagged.zero_()
        self._count.zero_()

    # -- answering ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        """The detector's max-softmax probability (high: in-distribution)."""
        if self.ood_net is None:
            raise RuntimeError("misinformation defense used before setup()")
        return torch.softmax(self.ood_net(x).float(), -1).amax(-1)

    @torch.no_grad()
    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        msp = self.score(x)
        alpha = torch.sigmoid(self.nu * (self._threshold.float() - msp)).to(probs.dtype)[:, None]
        mis = torch.softmax(self.mis_net(x).to(probs.dtype), -1)
        self._mixed_sum += alpha.double().sum()
        self._flagged += (alpha > 0.5).double().sum()
        self._count += len(x)
        return (1 - alpha) * probs + alpha * mis

    def report(self) -> dict[str, float]:
        n = max(float(self._count), 1.0)
        return {"tau": float(self._threshold), "mean_mix": float(self._mixed_sum) / n,
                "flagged": float(self._flagged) / n}


@hookimpl
def register_defenses(register):
    register("misinformation", AdaptiveMisinformation)
