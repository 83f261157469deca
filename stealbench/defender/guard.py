"""Run-time rules for defenses: what every released answer must satisfy, checked on every batch.

A defense gets copies of the images and of the clean probabilities, so it cannot corrupt the defender's record
(the utility statistics are computed from the clean answers the defender kept). Editing those copies in place is
still a broken rule: it is reported, with the plugin's name and the rule, and the run stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import math

import torch
from torch import Tensor

from ..defenses.base import Defense
from ..errors import DefenseOutputError, StealbenchError

SIMPLEX_TOLERANCE = 1e-4
ARGMAX_TOLERANCE = 1e-6


def _broke(who: str, rule: str, problem: str) -> DefenseOutputError:
    return DefenseOutputError(f"defense {who} broke rule [{rule}]: it {problem}")


def check_probabilities(released: Tensor, clean: Tensor, who: str) -> None:
    """Raise DefenseOutputError unless `released` is a batch of probability vectors shaped like `clean`."""
    if not isinstance(released, Tensor):
        raise _broke(who, "shape-dtype-device", f"returned {type(released).__name__}, not a torch.Tensor")
    if released.shape != clean.shape:
        raise _broke(who, "shape-dtype-device", f"returned shape {tuple(released.shape)}, expected "
                                                 f"{tuple(clean.shape)}")
    if released.dtype != clean.dtype:
        raise _broke(who, "shape-dtype-device", f"returned dtype {released.dtype}, expected {clean.dtype}")
    if released.device != clean.device:
        raise _broke(who, "shape-dtype-device", f"returned a tensor on {released.device}, expected {clean.device}")
    if not torch.isfinite(released).all():
        raise _broke(who, "simplex", "returned NaN or infinite values")
    if (released < -SIMPLEX_TOLERANCE).any():
        raise _broke(who, "simplex", f"returned negative probabilities (min {released.min().item():.3g})")
    if clean.shape[-1] > 1:
        worst = (released.double().sum(-1) - 1).abs().max().item() if len(released) else 0.0
        if worst > SIMPLEX_TOLERANCE:
            raise _broke(who, "simplex", f"returned rows that do not sum to 1 (worst row off by {worst:.3g}); a "
                                         "defense must release probability vectors")
    elif (released > 1 + SIMPLEX_TOLERANCE).any():
        raise _broke(who, "simplex", "returned a binary probability above 1")


def guarded_answer(defense: Defense, x: Tensor, clean: Tensor, who: str, clock=None) -> Tensor:
    """`defense(x, clean)` on copies, with every cheap rule checked; raises DefenseOutputError naming the rule.
    `clock` (a stealbench.defender.cost.ServingClock) times the defense's call alone."""
    timing = clock.timing("defense") if clock is not None else contextlib.nullcontext()
    x_copy, clean_copy = x.clone(), clean.clone()
    versions = (x_copy._version, clean_copy._version)  # bumped by any in-place edit, views included
    try:
        with timing:
            released = defense(x_copy, clean_copy)
    except StealbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the plugin, not its traceback
        raise _broke(who, "answers", f"raised {type(exc).__name__}: {_first_line(exc)}") from exc
    if (x_copy._version, clean_copy._version) != versions:
        edited = "the probabilities" if clean_copy._version != versions[1] else "the images"
        raise _broke(who, "inputs-unchanged", f"modified {edited} it was given in place; return a new tensor "
                                              "(e.g. `probs = probs * w`, not `probs *= w`)")
    check_probabilities(released, clean, who)
    if defense.preserves_argmax and len(clean) and clean.shape[-1] > 1:
        top = clean.argmax(-1, keepdim=True)
        # ties count as kept: the released top-1 value may equal another entry's
        lost = released.gather(-1, top).squeeze(-1) < released.amax(-1) - ARGMAX_TOLERANCE
        if lost.any():
            raise _broke(who, "argmax", f"declares preserves_argmax=True but changed the top-1 class of "
                                        f"{int(lost.sum())} of {len(clean)} answers")
    return released


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def check_defense_type(defense: Defense, who: str) -> None:
    if not isinstance(defense, Defense):
        raise _broke(who, "defense-type", f"is a {type(defense).__name__}, not a stealbench Defense (an nn.Module)")


def guarded_setup(defense: Defense, context, who: str) -> None:
    """`defense.setup(context)`; an error in it is one line naming the plugin and the rule."""
    check_defense_type(defense, who)
    try:
        defense.setup(context)
    except StealbenchError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _broke(who, "setup", f"raised {type(exc).__name__} in setup(): {_first_line(exc)}") from exc


def weights_checksum(net: torch.nn.Module) -> str:
    """A digest of every parameter and buffer (names and bytes): equal before and after iff nothing changed."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update((t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)).numpy().tobytes())
    return digest.hexdigest()


#: a defense's report() lands under this prefix: it cannot overwrite the measured defense/* figures
REPORT_PREFIX = "defense/report/"


def checked_report(defense: Defense, who: str) -> dict[str, float]:
    """The defense's own figures as `defense/report/<key>`: a mapping of names to finite numbers, or a broken rule."""
    try:
        report = defense.report()
    except Exception as exc:  # noqa: BLE001
        raise _broke(who, "report", f"raised {type(exc).__name__} in report(): {_first_line(exc)}") from exc
    if not isinstance(report, dict):
        raise _broke(who, "report", f"returned a {type(report).__name__} from report(), not a mapping of names to "
                                         "numbers")
    out = {}
    for key, value in report.items():
        if not isinstance(key, str) or not key or key.startswith("/"):
            raise _broke(who, "report", f"reported the key {key!r}; keys are non-empty names")
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _broke(who, "report", f"reported {key!r} = {value!r}; report() figures must be finite numbers")
        out[REPORT_PREFIX + key.removeprefix("defense/")] = float(value)
    return out


__all__ = ["REPORT_PREFIX", "check_defense_type", "check_probabilities", "checked_report", "guarded_answer", "guarded_setup",
           "weights_checksum"]
