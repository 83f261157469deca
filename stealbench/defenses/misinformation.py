"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020).

An out-of-distribution detector scores every query; in-distribution queries get the victim's answer, suspected
out-of-distribution ones (the attacker's synthetic or surrogate-data queries) get, smoothly, the answer of a
misinformation model trained to be wrong:

    y' = (1 - a) * y + a * y_mis,    a = sigmoid(nu * (tau - msp(x)))

msp is the detector's max-softmax probability. `setup()` trains both models with `DefenseSetup.train_model`:

- the detector (`detector: oe`): a copy of the victim fine-tuned with Outlier Exposure (Hendrycks et al. 2019):
  in-distribution images with their labels, outlier images with the uniform distribution as target;
  `detector: victim` uses the victim's own max-softmax instead (no training);
- the misinformation model: a copy of the victim fine-tuned to answer a wrong class, chosen by a random
  derangement of the classes (so the probability of the true class is driven to 0, as the paper's
  -log(1 - p_true) loss does, using only the soft-target trainer that DefenseSetup offers).

Outliers (offline): `outlier_data: auto` picks Fashion-MNIST (from `outlier_root`) for 28x28 grey victims, and
for other inputs (e.g. the 8x8 digits) random patches of scikit-learn's two bundled photographs
(`load_sample_images`: china.jpg, flower.jpg) resized to the input shape. Any registered data-set key works too.
tau is calibrated on held-out victim training images so that `benign_flag_rate` of them score below it.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import hookimpl
from ..errors import ConfigError
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


def reset_parameters(net: nn.Module) -> nn.Module:
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return net


class AdaptiveMisinformation(Defense):
    """Adaptive Misinformation (Kariyappa & Qureshi 2020): mix in a wrong model's answer as queries look OOD."""

    def __init__(self, tau: float | None = None, benign_flag_rate: float = 0.05, nu: float = 100.0,
                 detector: Literal["oe", "victim"] = "oe", outlier_data: str = "auto",
                 outlier_root: str = "../shared/data", epochs: int = 2, train_size: int | None = 10000,
                 outlier_weight: float = 0.5, from_victim: bool = True) -> None:
        """
        Args:
            tau: OOD threshold on the detector's max-softmax probability; null calibrates it (benign_flag_rate).
            benign_flag_rate: share of held-out in-distribution images whose score falls below tau.
            nu: sharpness of the switch a = sigmoid(nu * (tau - msp)).
            detector: `oe` (victim copy fine-tuned with Outlier Exposure) or `victim` (its own max-softmax).
            outlier_data: `auto`, `patches` (scikit-learn sample-photo patches) or a registered data-set key.
            outlier_root: where file-based outlier data sets live (passed as their `root`).
            epochs: training epochs of the detector and of the misinformation model.
            train_size: in-distribution images used for that training (null: all of the victim's).
            outlier_weight: outliers per in-distribution image in the OE training set.
            from_victim: start both models from the victim's weights (else from a fresh initialisation).
        """
        super().__init__()
        checks = [
            (tau is None or 0.0 < tau <= 1.0, f"defense.tau must be in (0, 1] or null, got {tau}"),
            (0.0 < benign_flag_rate < 1.0, f"defense.benign_flag_rate must be in (0, 1), got {benign_flag_rate}"),
            (nu > 0, f"defense.nu must be > 0, got {nu}"),
            (detector in ("oe", "victim"), f"defense.detector must be one of oe, victim; got {detector!r}"),
            (epochs >= 1, f"defense.epochs must be >= 1, got {epochs}"),
            (train_size is None or train_size >= 10, f"defense.train_size must be >= 10 or null, got {train_size}"),
            (outlier_weight > 0, f"defense.outlier_weight must be > 0, got {outlier_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.tau = tau
        self.benign_flag_rate = benign_flag_rate
        self.nu = nu
        self.detector = detector
        self.outlier_data = outlier_data
        self.outlier_root = outlier_root
        self.epochs = epochs
        self.train_size = train_size
        self.outlier_weight = outlier_weight
        self.from_victim = from_victim
        self.register_buffer("_threshold", torch.tensor(float(tau) if tau is not None else 0.5))
        self.register_buffer("_mixed_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_flagged", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_count", torch.zeros((), dtype=torch.float64))
        self.ood_net: nn.Module | None = None
        self.mis_net: nn.Module | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def load_outliers(self, context: DefenseSetup, n: int) -> Tensor:
        from ..pools import match_shape

        key = self.outlier_data
        if key == "auto":
            key = "fashion-mnist" if tuple(context.input_shape) == (1, 28, 28) else "patches"
        if key == "patches":
            return sample_image_patches(n, tuple(context.input_shape), context.generator)
        if context.load_dataset is None:
            raise ConfigError(f"defense.outlier_data {key!r} needs DefenseSetup.load_dataset")
        try:
            x, _ = context.load_dataset(key, root=self.outlier_root)
        except (TypeError, ConfigError):  # a data set without a `root` option (e.g. digits)
            x, _ = context.load_dataset(key)
        idx = torch.randperm(len(x), generator=context.generator)[:n]
        return match_shape(x[idx], tuple(context.input_shape))

    @staticmethod
    def derangement(k: int, generator: torch.Generator) -> Tensor:
        """A random permutation of range(k) without fixed points (k >= 2): a shuffled cyclic shift."""
        order = torch.randperm(k, generator=generator)
        mapping = torch.empty(k, dtype=torch.long)
        mapping[order] = order.roll(-1)
        return mapping

    def _copy_victim(self, context: DefenseSetup) -> nn.Module:
        net = copy.deepcopy(context.victim).cpu()
        for p in net.parameters():
            p.requires_grad_(True)
        return net if self.from_victim else reset_parameters(net)

    def setup(self, context: DefenseSetup) -> None:
        if context.train_model is None:
            raise ConfigError("the misinformation defense needs DefenseSetup.train_model to train its models")
        g = context.generator
        k = context.num_classes
        perm = torch.randperm(len(context.train_x), generator=g)
        held_out = perm[: max(10, min(2000, len(perm) // 10))]  # calibration images: not used for training
        train = perm[len(held_out):]
        if self.train_size is not None:
            train = train[: self.train_size]
        x, y = context.train_x[train], context.train_y[train]
        onehot = F.one_hot(y, k).float()

        # misinformation model: trained to be confidently wrong, towards a random derangement of the classes
        # (the true class's probability goes to 0; a fixed wrong class per class is as easy to learn as the task)
        wrong = F.one_hot(self.derangement(k, g)[y], k).float()
        self.mis_net = context.train_model(self._copy_victim(context), x, wrong, self.epochs,
                                           log_name="defense_misinformation")
        self.mis_net.eval()
        for p in self.mis_net.parameters():
            p.requires_grad_(False)

        if self.detector == "oe":
            outliers = self.load_outliers(context, max(1, int(len(x) * self.outlier_weight)))
            uniform = torch.full((len(outliers), k), 1.0 / k)
            self.ood_net = context.train_model(self._copy_victim(context), torch.cat([x, outliers]),
                                               torch.cat([onehot, uniform]), self.epochs, log_name="defense_oe")
        else:
            self.ood_net = copy.deepcopy(context.victim)
        self.ood_net.eval()
        for p in self.ood_net.parameters():
            p.requires_grad_(False)
        self.to(context.device)

        if self.tau is None:
            scores = self.score(context.train_x[held_out].to(context.device))
            self._threshold.fill_(float(torch.quantile(scores.double().cpu(), self.benign_flag_rate)))

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
