"""The label-mode interface: how an attacker turns the oracle's answers into training targets.

A label mode is registered through the ``register_label_modes`` hook (``register("mykey", MyMode)``) and has
three parts, all on the attacker's side:

- :meth:`LabelMode.ask`: how one image is asked (once, or several times and the answers combined);
- :meth:`LabelMode.observe` / :meth:`LabelMode.recover`: what it learns from the answers and its estimate of the
  clean probabilities behind them;
- :meth:`LabelMode.__call__`: answers -> targets (the recovered probabilities, or their argmax).

:meth:`LabelMode.wrap_oracle` puts a :class:`ModeOracle` between the attack and the oracle: the attack queries
and counts in images; every real query is still counted by the defender. The wrapper also sends the recovered
answers of an audited sample of queries to the defender's side, which scores them against the clean answers it
kept (``label_mode/recovery_l1``): the attacker never sees the clean answers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ...errors import ConfigError
from ...transport import audited_queries
from ..choice import plugin_of
from ..label_choice import LabelModeChoice, LabelOptions, mode_label  # plain data: what the defender holds

if TYPE_CHECKING:
    from ...attacks.base import OracleHandle
    from .kit import AttackerKit

#: `answers` value of a mode that applies against every defense
ALL = "all"


@dataclasses.dataclass
class NoOptions:
    """The mode takes no options."""


class LabelMode:
    """Base class (and the `soft` mode): the released probabilities, as they are.

    Subclasses set ``answers`` (the defense keys they are built against, or :data:`ALL`), ``Options`` (a
    dataclass of their options; its ``__post_init__`` raises ConfigError on bad values) and override the parts
    they change. The registry key is set as ``name`` by :func:`make_label_mode`.
    """

    answers: ClassVar[tuple[str, ...] | str] = ALL
    Options: ClassVar[type] = NoOptions
    #: train on the recovered probabilities (`soft`) or their one-hot argmax (`hard`)
    then: str = "soft"

    def __init__(self, num_classes: int, options: Any = None) -> None:
        self.name = type(self).__name__.lower()
        self.num_classes = int(num_classes)
        self.options = options if options is not None else self.Options()
        self.then = getattr(self.options, "then", type(self).then)

    # -- what the attack talks to ---------------------------------------------------------------------------
    @property
    def queries_per_image(self) -> int:
        """Real queries spent per image the attack asks about."""
        return 1

    def effective_budget(self, budget: int) -> int:
        """The budget as the attack sees it through :meth:`wrap_oracle` (in images)."""
        return budget // self.queries_per_image

    def wrap_oracle(self, oracle: "OracleHandle", generator: torch.Generator | None = None) -> "ModeOracle":
        """What the attack queries; `generator` (a sub-stream of the attack's seed stream) drives random asks."""
        return ModeOracle(oracle, self, generator)

    def ask(self, oracle: "OracleHandle", x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One answer per image of `x`; modes that ask several times query `queries_per_image` images per image,
        in blocks (image 0's repeats first), and combine them."""
        return oracle.query(x)

    # -- the attacker's own resources (modes that train models of their own, e.g. D-DAE) --------------------
    def prepare(self, kit: "AttackerKit") -> None:
        """Called once in the attacker's process before the attack starts, with the attacker's own images,
        labels, model factory and trainer (:class:`~.kit.AttackerKit`); nothing here is the defender's."""

    # -- answers -> targets ---------------------------------------------------------------------------------
    def observe(self, released: Tensor) -> None:
        """Called with every batch of answers before the attack sees it (e.g. to estimate a defense's parameters)."""

    def recover(self, released: Tensor) -> Tensor:
        """The mode's estimate of the clean probabilities behind `released` (the identity here)."""
        return released

    def __call__(self, released: Tensor) -> Tensor:
        probs = self.recover(released.detach().float())
        if self.then == "hard":
            return torch.nn.functional.one_hot(probs.argmax(-1), self.num_classes).float()
        return probs

    def report(self) -> dict[str, float]:
        """Figures for results.json (`label_mode/...`), computed on the attacker's side."""
        return {}

    # -- the catalogue ------------------------------------------------------------------------------------
    @classmethod
    def answers_defense(cls, defense_key: str) -> bool:
        return cls.answers == ALL or defense_key in tuple(cls.answers)

    @classmethod
    def summary(cls) -> str:
        """`answers: ...; options: ...`, for `stealbench list label_modes`."""
        answers = cls.answers if cls.answers == ALL else ", ".join(cls.answers)
        options = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options)) or "none"
        return f"answers: {answers}; options: {options}"


class ModeOracle:
    """The oracle as the attack sees it through a label mode: counted in images, audited for recovery.

    `budget`, `used` and `remaining` are in images (real queries // queries_per_image), so an attack's own
    accounting stays exact; the real oracle counts every query. For an audited sample of queries (see
    :func:`stealbench.transport.audited_queries`) the recovered answers go to the defender's side with the
    indices of the queries they came from.
    """

    def __init__(self, oracle: "OracleHandle", mode: LabelMode, generator: torch.Generator | None = None) -> None:
        self._oracle = oracle
        self._mode = mode
        self._generator = generator
        self._q = mode.queries_per_image
        self.budget = oracle.budget // self._q
        self.input_shape = oracle.input_shape
        self.num_classes = oracle.num_classes

    @property
    def used(self) -> int:
        return -(-self._oracle.used // self._q)

    @property
    def remaining(self) -> int:
        return self._oracle.remaining // self._q

    def query(self, x: Tensor) -> Tensor:
        start = self._oracle.used
        answers = self._mode.ask(self._oracle, x, self._generator)
        self._mode.observe(answers)
        report = getattr(self._oracle, "report_recovered", None)
        if report is not None and len(x):
            index = start + torch.arange(len(x) * self._q).view(len(x), self._q)
            keep = audited_queries(index, self._oracle.budget).all(1)
            if keep.any():
                recovered = self._mode.recover(answers[keep].detach().float())
                report(index[keep], recovered.detach().float().cpu())
        return answers

    def stats(self) -> dict[str, float]:
        stats = getattr(self._oracle, "stats", None)
        return stats() if stats is not None else {}


def _catalog_entry(name: str):
    from ...errors import StealbenchError
    from ...plugins import get_catalog  # the catalogue loads the modes' modules, never the other way round

    registry = get_catalog(attacks=True).label_modes  # attacker-side code: the defender's view has none
    try:
        return registry.entry(name)
    except StealbenchError as exc:
        raise ConfigError(f"--label_mode: {exc}") from None


def make_label_mode(name: str, num_classes: int, options: dict[str, Any] | None = None) -> LabelMode:
    """The registered label mode `name` with `options`; raises ConfigError naming the option for bad values."""
    cls = _catalog_entry(name).obj
    given = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"--label_options.{', --label_options.'.join(unknown)} do not apply to label_mode "
                          f"{name!r} (it reads: {', '.join(sorted(known)) or 'no options'})")
    mode = cls(num_classes, cls.Options(**given))
    mode.name = name
    return mode


def build_label_mode(choice: LabelModeChoice, num_classes: int, budget: int | None = None):
    """(mode, resolved): the attacker's side builds the label mode; ConfigError (one line, naming the option)
    when it is refused. `resolved`: {key, source, plugin, answers ("all" or defense keys), effective_budget (the
    budget in images as the attack sees it, None without `budget`)}. Runs on the attacker's side (session.py)."""
    from ...errors import StealbenchError
    from ...plugins import get_catalog

    try:
        mode = make_label_mode(choice.key, int(num_classes), LabelOptions(choice.options))
        answers = type(mode).answers
        resolved = {"key": choice.key, "source": get_catalog(attacks=True).label_modes.source(choice.key),
                    "plugin": plugin_of(get_catalog(attacks=True), "label_modes", choice.key),
                    "answers": ALL if answers == ALL else [str(a) for a in answers],
                    "effective_budget": None if budget is None else int(mode.effective_budget(int(budget)))}
    except StealbenchError as exc:
        raise ConfigError(str(exc).splitlines()[0] if str(exc) else f"label mode {choice.key!r} refused") from None
    except Exception as exc:  # the mode's own __init__ or Options: its words, in one line
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"label mode {choice.key!r} failed to build: {type(exc).__name__}: {text}") from None
    return mode, resolved


def check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"--label_options.{option} must be one of {', '.join(choices)}; got {value!r}")


def check_number(option: str, value: Any, *, minimum: float, integer: bool = False, strict: bool = False,
                 allow_none: bool = False) -> None:
    """A one-line error unless `value` is a number (an integer if asked) >= minimum (> if strict)."""
    if value is None and allow_none:
        return
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (value <= minimum if strict else value < minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        null = " or null" if allow_none else ""
        raise ConfigError(f"--label_options.{option} must be {kind} {bound}{null}, got {value!r}")


__all__ = ["ALL", "LabelMode", "LabelModeChoice", "LabelOptions", "ModeOracle", "NoOptions", "build_label_mode",
           "check_choice", "check_number", "make_label_mode", "mode_label"]
