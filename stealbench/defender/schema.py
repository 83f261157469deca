"""What the attacker's process may send: every message is checked against a strict schema before it is acted on.

Why: the attacker's process runs the attack's code, so each message is untrusted input. A message of an unknown
kind or op, with unknown or missing fields, wrong types or values out of range is refused with one line naming the
rule; the record (metrics, curve, W&B history) is written by the framework only. The attacker may report figures
of its own, but only under ``attack/`` and only as finite numbers (:func:`attack_metrics`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..errors import ProtocolError

#: the attacker's own figures (label-mode reports, relayed training logs) live under this prefix, nowhere else
ATTACK_PREFIX = "attack/"
#: keys the framework measures: nothing from the attacker's process (or a plugin's report) may write them
FRAMEWORK_PREFIXES = ("surrogate/", "victim/", "defense/", "label_mode/", "oracle/", "seed_set/", "attack/")
FRAMEWORK_KEYS = ("queries", "round", "retrained_from_scratch", "epoch", "trainer/global_step")
MAX_TEXT = 2000  # one `say` line
MAX_DETAILS = 200_000  # a traceback text
MAX_KEYS = 1000


def _broke(what: str, problem: str) -> ProtocolError:
    return ProtocolError(f"the attacker's process sent a malformed {what}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fields(what: str, args: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise _broke(what, f"its arguments are a {type(args).__name__}, not a mapping")
    unknown = sorted(set(args) - set(required) - set(optional))
    missing = [k for k in required if k not in args]
    if unknown or missing:
        parts = ([f"unknown field(s) {', '.join(map(repr, unknown))}"] if unknown else []) + (
            [f"missing field(s) {', '.join(map(repr, missing))}"] if missing else [])
        raise _broke(what, "; ".join(parts))
    return args


def _text(what: str, name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise _broke(what, f"{name} must be text, got {type(value).__name__}")
    return value[:limit]


# ---------------------------------------------------------------------------------------------- each message
def check_call(op: Any, args: Any) -> dict[str, Any]:
    """A request's arguments, checked; ProtocolError (answered to the attack, which may catch it) if malformed."""
    what = f"{op!r} request"
    if op == "hello":
        return _fields(what, args, ())
    if op == "query":
        args = _fields(what, args, ("x",))
        if not isinstance(args["x"], Tensor):
            raise _broke(what, f"x must be a tensor of images, got {type(args['x']).__name__}")
        return args
    if op == "checkpoint":
        args = _fields(what, args, ("state", "round", "retrained"))
        state = args["state"]
        if not isinstance(state, dict) or not state or not all(
                isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
            raise _broke(what, "state must be a non-empty mapping of parameter names to tensors "
                               "(the surrogate's state_dict)")
        if not _is_int(args["round"]) or args["round"] < 1:
            raise _broke(what, f"round must be an integer >= 1 (rounds count from 1), got {args['round']!r}")
        if not isinstance(args["retrained"], bool):
            raise _broke(what, f"retrained must be true or false, got {args['retrained']!r}")
        return args
    if op == "seed_set":
        args = _fields(what, args, ("per_class",))
        if not _is_int(args["per_class"]):
            raise _broke(what, f"per_class must be an integer, got {args['per_class']!r}")
        return args
    raise _broke("request", f"unknown op {op!r} (known: checkpoint, hello, query, seed_set)")


def check_notify(op: Any, args: Any) -> dict[str, Any]:
    what = f"{op!r} message"
    if op == "log":
        args = _fields(what, args, ("metrics",), ("step",))
        metrics = args["metrics"]
        if not isinstance(metrics, dict) or len(metrics) > MAX_KEYS or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in metrics.items()):
            raise _broke(what, "metrics must be a mapping of names to numbers")
        step = args.get("step")
        if step is not None and (not _is_int(step) or step < 0):
            raise _broke(what, f"step must be a non-negative integer or null, got {step!r}")
        return args
    if op == "say":
        args = _fields(what, args, ("text",))
        return {"text": _text(what, "text", args["text"], MAX_TEXT)}
    if op == "recovered":
        args = _fields(what, args, ("index", "recovered"))
        if not (isinstance(args["index"], Tensor) and isinstance(args["recovered"], Tensor)):
            raise _broke(what, "index and recovered must be tensors")
        return args
    raise _broke("message", f"unknown op {op!r} (known: log, recovered, say)")


def check_done(payload: Any) -> dict[str, Any]:
    what = "final report"
    payload = _fields(what, payload, ("label_mode", "environment"), ("attack",))
    for field, whose in (("label_mode", "the label mode's"), ("attack", "the attack's")):
        report = payload.get(field, {})
        if not isinstance(report, dict) or len(report) > MAX_KEYS:
            raise _broke(what, f"{whose} report must be a mapping")
        for key, value in report.items():
            if not isinstance(key, str) or not key or not is_finite_number(value):
                raise _broke(what, f"{whose} figure {key!r} is {value!r}; figures must be finite numbers")
            if field == "attack" and key.removeprefix(ATTACK_PREFIX).startswith("label_mode/"):
                raise _broke(what, f"the attack's figure {key!r} lies under label_mode/, the label mode's figures")
    payload.setdefault("attack", {})
    if not isinstance(payload["environment"], dict):
        raise _broke(what, "environment must be a mapping")
    return payload


def check_failed(payload: Any) -> dict[str, Any]:
    what = "failure report"
    payload = _fields(what, payload, ("type", "module", "message"), ("details", "stealbench"))
    out = {k: _text(what, k, payload[k], MAX_TEXT) for k in ("type", "module", "message")}
    out["details"] = _text(what, "details", payload.get("details", ""), MAX_DETAILS)
    out["stealbench"] = payload.get("stealbench") is True
    return out


def check_envelope(message: Any) -> tuple[str, Any, Any]:
    """(kind, op, args) of a decoded message; ProtocolError unless it is a 3-item list of a known kind."""
    if not isinstance(message, list) or len(message) != 3:
        raise _broke("message", "a message is [kind, op, arguments]")
    kind, op, args = message
    if kind not in ("call", "notify", "done", "failed"):
        raise _broke("message", f"unknown kind {kind!r} (known: call, notify, done, failed)")
    return kind, op, args


def check_label_mode(payload: Any, key: str, budget: int | None) -> dict[str, Any]:
    """The attacker's side's account of the label mode it built (the handshake's "label_mode" answer): {key,
    source, plugin, answers, effective_budget}. Its word only: `answers` picks grid cells, `effective_budget` is
    what the attack's validate() is told; the oracle counts every real query against the budget regardless."""
    what = "label mode description"
    payload = _fields(what, payload, ("key", "source", "plugin", "answers", "effective_budget"))
    if payload["key"] != key:
        raise _broke(what, f"it describes {payload['key']!r}, not the label mode {key!r} asked for")
    source = payload["source"]
    source = None if source is None else _text(what, "source", source, MAX_TEXT)
    plugin = _plugin(what, payload["plugin"])
    answers = payload["answers"]
    if answers != "all" and (not isinstance(answers, list) or len(answers) > MAX_KEYS
                             or not all(isinstance(a, str) for a in answers)):
        raise _broke(what, f"answers must be \"all\" or a list of defense keys, got {answers!r}"[:MAX_TEXT])
    effective = payload["effective_budget"]
    if budget is None and effective is not None:
        raise _broke(what, "effective_budget must be null when no budget was given")
    if budget is not None and (not _is_int(effective) or not 0 <= effective <= budget):
        raise _broke(what, f"effective_budget must be an integer from 0 to the budget {budget}, got {effective!r}")
    return {"key": key, "source": source, "plugin": plugin,
            "answers": answers if answers == "all" else [a[:MAX_TEXT] for a in answers],
            "effective_budget": effective}


def _plugin(what: str, plugin: Any) -> dict[str, str]:
    if not isinstance(plugin, dict) or len(plugin) > 1 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in plugin.items()):
        raise _broke(what, "plugin must map the registering plugin's name to its version")
    return {k[:MAX_TEXT]: v[:MAX_TEXT] for k, v in plugin.items()}


def check_attack_description(payload: Any, key: str) -> dict[str, Any]:
    """The attacker's side's account of the attack it built (the handshake's "resolved" answer): {key, source,
    plugin, params, config, needs_pool}, recorded in results.json and the run's config. Its word only: nothing in
    it sets a budget, a metric or a path."""
    what = "attack description"
    payload = _fields(what, payload, ("key", "source", "plugin", "params", "config", "needs_pool"))
    resolved = _text(what, "key", payload["key"], MAX_TEXT)
    if resolved != key and "." not in key:  # a class path asked for comes back as its registry key
        raise _broke(what, f"it describes {resolved!r}, not the attack {key!r} asked for")
    source = payload["source"]
    config = payload["config"]
    if not isinstance(config, dict) or set(config) != {"class_path", "init_args"} or not isinstance(
            config["init_args"], dict) or len(config["init_args"]) > MAX_KEYS:
        raise _broke(what, "config must be {class_path, init_args} with init_args a mapping")
    if not isinstance(payload["needs_pool"], bool):
        raise _broke(what, f"needs_pool must be true or false, got {payload['needs_pool']!r}"[:MAX_TEXT])
    return {"key": resolved, "source": None if source is None else _text(what, "source", source, MAX_TEXT),
            "plugin": _plugin(what, payload["plugin"]), "params": _text(what, "params", payload["params"], MAX_TEXT),
            "config": {"class_path": _text(what, "class_path", config["class_path"], MAX_TEXT),
                       "init_args": config["init_args"]}, "needs_pool": payload["needs_pool"]}


# ---------------------------------------------------------------------------------------------- key ownership
def attack_key(key: str) -> str:
    """Where an attacker-reported figure lands: always under ``attack/`` (``label_mode/kept`` becomes
    ``attack/label_mode/kept``, ``surrogate/train_loss`` becomes ``attack/surrogate/train_loss``)."""
    return key if key.startswith(ATTACK_PREFIX) else ATTACK_PREFIX + key


def attack_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The attacker's figures under ``attack/``, finite numbers only (the rest is dropped: a NaN training loss is
    not a figure the record can hold)."""
    return {attack_key(k): float(v) for k, v in values.items() if is_finite_number(v)}


__all__ = ["ATTACK_PREFIX", "FRAMEWORK_KEYS", "FRAMEWORK_PREFIXES", "ProtocolError", "attack_key", "attack_metrics",
           "check_call", "check_done", "check_envelope", "check_failed", "check_label_mode", "check_notify",
           "is_finite_number"]
