"""`ddae`: D-DAE (Chen et al., "D-DAE: Defense-Penetrating Model Extraction Attacks", IEEE S&P 2023).

The attacker knows the family of defenses a service may run (the candidates: registered defense keys, built here
on the attacker's side with parameters drawn from `ranges`), not which one is on nor its parameters. Before it
restores anything it

1. trains `shadow_models` shadow victims (the surrogate's architecture, the run's surrogate recipe) on labelled
   data it owns: with `--pool_data` the pool data set's own labels (the paper's setting: the attacker's own data,
   which need not come from the victim's training distribution), otherwise the framework's labelled seed set
   (the images JBDA's attacker holds with their labels; the same set the attack drew, or 10 per class);
2. asks them about `shadow_queries` of its own pool images (answers made more or less confident by a random
   logit scale, since a real victim is usually more confident than a shadow trained on little data) and passes
   the answers through every candidate defense, `draws` parameter settings each;
3. learns (a) a detector of which defense (or none) released an answer, from the sorted answer vector, and (b)
   one restorer per candidate, from defended to clean answers (see ddae_nets.py).

At attack time every batch of real answers updates the detector's verdict (the class of highest mean posterior
over all answers seen so far: a verdict on the answers' distribution, not row by row), and answers are restored
with the verdict's restorer (`none`, or a candidate whose restorer did not beat the released answers on held-out
shadow answers: kept as released). Shadow training costs no queries; its compute is
reported (`label_mode/shadow_seconds` and what was trained), with the verdict (`label_mode/detected`: 0 for none,
i for the i-th candidate; `label_mode/detected_confidence`; `label_mode/detected_as/<key>` the mean posterior of
each). Named deviations from the paper: the paper's generative recovery model is a small MLP here (a correction
to the defended log-probabilities), and the detector reads one answer at a time (its posteriors are averaged).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ... import hookimpl
from ...errors import ConfigError
from .base import LabelMode, check_choice, check_number
from .ddae_nets import detect, restore, train_detector, train_restorer
from .kit import AttackerKit

DEFAULT_CANDIDATES = ("deceptive", "rounding", "topk")
#: parameter ranges [low, high] drawn uniformly (integers where the defense's default is an integer)
DEFAULT_RANGES: dict[str, dict[str, list[float]]] = {
    "deceptive": {"beta": [0.3, 1.5], "gamma": [0.05, 0.5]},
    "rounding": {"decimals": [1, 3]},
    "topk": {"k": [1, 3]},
}
#: share of the shadow answers held out to report the detector's accuracy and the restorers' error
HOLDOUT = 0.2


def _defense_class(key: str):
    from ...plugins import get_catalog  # the catalogue loads the modes' modules, never the other way round

    registry = get_catalog().defenses
    if key not in set(registry):
        raise ConfigError(f"--label_options.candidates: {key!r} is not a registered defense (known: "
                          f"{', '.join(k for k in sorted(registry) if k != 'none')})")
    return registry.get(key)


@dataclass
class DDAEOptions:
    #: the defenses the attacker thinks the service may run (registered defense keys; `none` is always a class)
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    #: {defense: {parameter: [low, high] or a fixed value}}; null: DEFAULT_RANGES for the candidates it covers
    #: (a candidate with no range is built with its defaults)
    ranges: dict[str, dict[str, Any]] | None = None
    #: parameter settings drawn per candidate (each shadow answer goes through one of them)
    draws: int = 8
    #: the labelled data the shadow victims train on: `pool_labels` (the pool data set's own labels, with
    #: --pool_data), `seed_set` (the framework's labelled seed set) or `auto` (the first of them the run has)
    shadow_data: Literal["auto", "pool_labels", "seed_set"] = "auto"
    #: seed-set images per class for `seed_set` (null: the set the attack drew, or 10 per class)
    seed_per_class: int | None = None
    #: at most this many labelled images train each shadow victim (a random 80% of them each)
    shadow_train_size: int = 5000
    shadow_models: int = 2
    shadow_epochs: int = 20
    #: attacker pool images each shadow victim answers (the shadow answers, per shadow)
    shadow_queries: int = 2000
    #: [low, high] of the log-uniform factor the shadow logits are multiplied by, answer by answer
    logit_scale: tuple[float, float] = (0.5, 4.0)
    #: each shadow answer is used this many times, each with its own logit scale and defense draw
    answer_repeats: int = 4
    #: width of the detector's and the restorers' hidden layers, their epochs and learning rate
    hidden: int = 128
    net_epochs: int = 30
    lr: float = 1e-3
    #: train on the restored probabilities (`soft`) or their argmax (`hard`)
    then: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        for key in ("draws", "answer_repeats", "shadow_train_size", "shadow_models", "shadow_epochs", "shadow_queries", "hidden",
                    "net_epochs"):
            check_number(key, getattr(self, key), minimum=1, integer=True)
        check_number("seed_per_class", self.seed_per_class, minimum=1, integer=True, allow_none=True)
        check_number("lr", self.lr, minimum=0, strict=True)
        check_choice("shadow_data", self.shadow_data, ("auto", "pool_labels", "seed_set"))
        check_choice("then", self.then, ("soft", "hard"))
        self._check_logit_scale()
        self._check_candidates()
        self.ranges = self._checked_ranges()

    def _check_logit_scale(self) -> None:
        scale = self.logit_scale
        if (not isinstance(scale, (list, tuple)) or len(scale) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
                or not 0 < scale[0] <= scale[1]):
            raise ConfigError(f"--label_options.logit_scale must be [low, high] with 0 < low <= high, got {scale!r}")
        self.logit_scale = (float(scale[0]), float(scale[1]))

    def _check_candidates(self) -> None:
        given = self.candidates
        if isinstance(given, str):
            given = [given]
        if not isinstance(given, (list, tuple)) or not given or not all(isinstance(k, str) for k in given):
            raise ConfigError(f"--label_options.candidates must be a non-empty list of defense keys, got {given!r}")
        if "none" in given or len(set(given)) != len(given):
            raise ConfigError("--label_options.candidates lists each defense once and not `none` (no defense is "
                              f"always a class of the detector), got {list(given)!r}")
        for key in given:
            _defense_class(key)
        self.candidates = tuple(given)

    def _checked_ranges(self) -> dict[str, dict[str, Any]]:
        given = self.ranges
        if given is None:
            return {k: v for k, v in DEFAULT_RANGES.items() if k in self.candidates}
        if not isinstance(given, dict):
            raise ConfigError(f"--label_options.ranges must map defense keys to {{parameter: [low, high]}}, "
                              f"got {given!r}")
        for key, params in given.items():
            if key not in self.candidates:
                raise ConfigError(f"--label_options.ranges names {key!r}, which is not one of the candidates "
                                  f"({', '.join(self.candidates)})")
            known = set(inspect.signature(_defense_class(key)).parameters)
            if not isinstance(params, dict) or not set(params) <= known:
                raise ConfigError(f"--label_options.ranges.{key} must map parameters of defense {key!r} "
                                  f"({', '.join(sorted(known))}) to [low, high] or a value, got {params!r}")
            for name, value in params.items():
                bounds = value if isinstance(value, (list, tuple)) else [value, value]
                if (len(bounds) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in bounds) or bounds[0] > bounds[1]):
                    raise ConfigError(f"--label_options.ranges.{key}.{name} must be a number or [low, high] with "
                                      f"low <= high, got {value!r}")
        return {k: {n: (list(v) if isinstance(v, (list, tuple)) else [v, v]) for n, v in p.items()}
                for k, p in given.items()}


def draw_defenses(key: str, ranges: dict[str, list[float]], draws: int, generator: torch.Generator) -> list:
    """`draws` instances of defense `key`, each parameter uniform in its range (integer where its default is)."""
    cls = _defense_class(key)
    signature = inspect.signature(cls)
    out = []
    for _ in range(draws):
        params = {}
        for name, (low, high) in ranges.items():
            default = signature.parameters[name].default
            if isinstance(default, int) and not isinstance(default, bool):
                params[name] = int(torch.randint(int(low), int(high) + 1, (1,), generator=generator))
            else:
                params[name] = float(low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64))
        try:
            out.append(cls(**params))
        except ConfigError as exc:
            raise ConfigError(f"--label_options.ranges.{key}: {exc}") from None
    return out


class DDAE(LabelMode):
    """D-DAE: shadow victims through the candidate defenses teach a defense detector and a restorer"""

    answers = DEFAULT_CANDIDATES
    Options = DDAEOptions

    def __init__(self, num_classes: int, options: DDAEOptions | None = None) -> None:
        super().__init__(num_classes, options)
        self.answers = tuple(self.options.candidates)  # this instance's candidates (the class: the defaults)
        self.classes = ("none", *self.options.candidates)
        self._kit: AttackerKit | None = None
        self.detector: nn.Module | None = None
        self.restorers: dict[str, nn.Module] = {}
        self._posterior_sum = torch.zeros(len(self.classes), dtype=torch.float64)
        self._seen = 0
        self._report: dict[str, float] = {}
        self._announced: str | None = None

    # -- shadow training ------------------------------------------------------------------------------------
    def prepare(self, kit: AttackerKit) -> None:
        self._kit = kit
        self._labelled_source(kit)  # a missing data source fails now, before the attack spends anything

    def _labelled_source(self, kit: AttackerKit) -> str:
        choice = self.options.shadow_data
        if choice == "auto":
            choice = "pool_labels" if kit.pool_labels is not None else "seed_set"
        if choice == "pool_labels" and kit.pool_labels is None:
            raise ConfigError("--label_options.shadow_data pool_labels needs a pool from another data set with its "
                              "own labels (--pool_data); use shadow_data seed_set or auto")
        if choice == "seed_set" and (kit.seed_set is None or not kit.seed_set.available):
            raise ConfigError("--label_options.shadow_data seed_set needs the framework's labelled seed set, which "
                              "this run does not offer; give the attacker a labelled pool (--pool_data)")
        if choice == "pool_labels" and len(kit.pool_labels) and int(kit.pool_labels.max()) >= self.num_classes:
            raise ConfigError(f"--label_options.shadow_data pool_labels: the pool data set has more classes than "
                              f"the victim's {self.num_classes}, so shadow answers would not look like the "
                              "oracle's; use shadow_data seed_set")
        return choice

    def _labelled(self, kit: AttackerKit, generator: torch.Generator) -> tuple[Tensor, Tensor, str]:
        source = self._labelled_source(kit)
        if source == "pool_labels":
            x, y = kit.pool_x, kit.pool_labels
        else:
            x, y = kit.seed_set.get(self.options.seed_per_class)
        keep = torch.randperm(len(x), generator=generator)[: self.options.shadow_train_size]
        return x[keep], y[keep].long(), source

    def _shadow_answers(self, kit: AttackerKit, g: torch.Generator) -> tuple[Tensor, Tensor, list[nn.Module],
                                                                            Tensor, Tensor]:
        """(images, clean answers) of the shadow victims on the attacker's pool images; the shadows; their data."""
        opts = self.options
        x_lab, y_lab, self._source = self._labelled(kit, g)
        targets = nn.functional.one_hot(y_lab, self.num_classes).float()
        shadows, images, answers = [], [], []
        low, high = (float(v) for v in opts.logit_scale)
        for _ in range(opts.shadow_models):
            part = torch.randperm(len(x_lab), generator=g)[: max(1, int(0.8 * len(x_lab)))]
            shadow = kit.train(kit.new_model(), x_lab[part], targets[part], opts.shadow_epochs).eval()
            shadows.append(shadow)
            asked = torch.cat([kit.pool_x[torch.randperm(len(kit.pool_x), generator=g)[: opts.shadow_queries]],
                               x_lab])
            asked = asked.repeat(opts.answer_repeats, 1, 1, 1)
            logits = _predict_logits(shadow, asked[: len(asked) // opts.answer_repeats], kit.device)
            logits = logits.repeat(opts.answer_repeats, 1)
            scale = torch.empty(len(asked), 1).uniform_(math.log(low), math.log(high), generator=g).exp()
            images.append(asked)
            answers.append(torch.softmax(logits * scale, -1))
        return torch.cat(images), torch.cat(answers), shadows, x_lab, y_lab

    def _defended(self, key: str, x: Tensor, clean: Tensor, shadows: list[nn.Module], x_lab: Tensor,
                  y_lab: Tensor, g: torch.Generator) -> Tensor:
        """Every clean shadow answer through one of `draws` instances of candidate `key` (rows split among them)."""
        from ...defenses.base import Defense

        defenses = draw_defenses(key, self.options.ranges.get(key, {}), self.options.draws, g)
        which = torch.randint(len(defenses), (len(clean),), generator=g)
        out = torch.empty_like(clean)
        with torch.random.fork_rng(devices=[]):  # randomised defenses draw from the mode's own stream
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
            for i, defense in enumerate(defenses):
                if type(defense).setup is not Defense.setup:  # e.g. a proxy or detector: built on a shadow
                    self._set_up(key, defense, shadows[i % len(shadows)], x_lab, y_lab, g)
                rows = (which == i).nonzero().squeeze(1)
                with torch.no_grad():
                    out[rows] = defense(x[rows], clean[rows]).float()
        return out

    def _set_up(self, key: str, defense, shadow: nn.Module, x_lab: Tensor, y_lab: Tensor,
                g: torch.Generator) -> None:
        from ...defenses.base import DefenseSetup

        for p in shadow.parameters():
            p.requires_grad_(False)
        setup = DefenseSetup(victim=shadow.cpu().eval(), train_x=x_lab, train_y=y_lab, num_classes=self.num_classes,
                             input_shape=tuple(self._kit.input_shape), device=torch.device("cpu"), generator=g)
        try:
            defense.setup(setup)
        except ConfigError as exc:
            raise ConfigError(f"--label_options.candidates: defense {key!r} cannot be set up on the attacker's "
                              f"shadow victims: {exc}") from None

    def _train(self) -> None:
        if self._kit is None:
            raise ConfigError("label_mode ddae trains on the attacker's own data: it runs inside an attack "
                              "(stealbench fit), which hands it the attacker's resources (LabelMode.prepare)")
        started = time.perf_counter()
        kit, opts, g = self._kit, self.options, self._kit.generator
        x, clean, shadows, x_lab, y_lab = self._shadow_answers(kit, g)
        held = torch.rand(len(clean), generator=g) < HOLDOUT
        answers, labels, report = [clean], [torch.zeros(len(clean), dtype=torch.long)], {}
        for i, key in enumerate(opts.candidates, start=1):
            defended = self._defended(key, x, clean, shadows, x_lab, y_lab, g)
            answers.append(defended)
            labels.append(torch.full((len(clean),), i, dtype=torch.long))
            self.restorers[key] = train_restorer(defended[~held], clean[~held], hidden=opts.hidden,
                                                 epochs=opts.net_epochs, lr=opts.lr, generator=g)
            err = float((restore(self.restorers[key], defended[held]) - clean[held]).abs().sum(-1).mean())
            raw = float((defended[held] - clean[held]).abs().sum(-1).mean())
            if not err < raw:  # no better than the released answers on the shadow holdout: keep those
                del self.restorers[key]
            report[f"label_mode/restorer_holdout_l1/{key}"] = min(err, raw)
            report[f"label_mode/released_holdout_l1/{key}"] = raw
        answers, labels = torch.cat(answers), torch.cat(labels)
        held_all = held.repeat(len(self.classes))
        self.detector = train_detector(answers[~held_all], labels[~held_all], len(self.classes), hidden=opts.hidden,
                                       epochs=opts.net_epochs, lr=opts.lr, generator=g)
        hits = detect(self.detector, answers[held_all]).argmax(-1) == labels[held_all]
        report["label_mode/detector_holdout_acc"] = float(hits.float().mean())
        report.update({"label_mode/shadow_seconds": time.perf_counter() - started,
                       "label_mode/shadow_models": float(opts.shadow_models),
                       "label_mode/shadow_train_images": float(len(x_lab)),
                       "label_mode/shadow_answers": float(len(clean)),
                       "label_mode/shadow_labels_from_pool_data": float(self._source == "pool_labels")})
        self._report = report
        kit.log(f"ddae: {opts.shadow_models} shadow victims on {len(x_lab)} labelled images ({self._source}), "
                f"detector and {len(opts.candidates)} restorers trained in {report['label_mode/shadow_seconds']:.1f}s "
                "(no queries)")

    # -- attack time ----------------------------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        """The detected defense (or `none`): highest mean posterior over every answer seen."""
        return self.classes[int(self._posterior_sum.argmax())] if self._seen else "none"

    def observe(self, released: Tensor) -> None:
        if len(released) == 0:
            return
        if self.detector is None:
            self._train()
        posterior = detect(self.detector, released.detach().float().cpu())
        self._posterior_sum += posterior.double().sum(0)
        self._seen += len(released)
        if self._announced != self.verdict and self._kit is not None:
            self._announced = self.verdict
            self._kit.log(f"ddae: detected {self.verdict} after {self._seen} answers")

    def recover(self, released: Tensor) -> Tensor:
        if len(released) == 0 or self.verdict not in self.restorers:  # `none`, or no restorer beat the identity
            return released
        restored = restore(self.restorers[self.verdict], released.detach().float().cpu())
        return restored.to(released.device, released.dtype if released.is_floating_point() else torch.float32)

    def report(self) -> dict[str, float]:
        out = dict(self._report)
        if self._seen:
            mean = self._posterior_sum / self._seen
            out["label_mode/detected"] = float(self.classes.index(self.verdict))
            out["label_mode/detected_confidence"] = float(mean.max())
            out.update({f"label_mode/detected_as/{key}": float(p) for key, p in zip(self.classes, mean)})
        return out


@torch.no_grad()
def _predict_logits(net: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    net = net.to(device).eval()
    return torch.cat([net(xb.to(device)).float().cpu() for xb in x.split(1024)])


@hookimpl
def register_label_modes(register):
    register("ddae", DDAE)


__all__ = ["DDAE", "DDAEOptions", "DEFAULT_CANDIDATES", "DEFAULT_RANGES", "draw_defenses"]
