"""The evaluator's process: build the surrogate architecture once, then answer each checkpoint with its outputs.

Protocol (plain data, stealbench.transport): the defender sends a boot message ({sys_path, env, threads}), then
the spec ({arch, num_classes, input_shape, mean, std, pretrained, device, eval_x}); this side answers ("ready",
{}) or ("failed", error). Then per checkpoint: ("state", {state}) -> ("probs", {probs}), or ("error", error)
when the weights do not fit the architecture. It ends when the defender closes the link.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import torch

from ..transport import decode, encode, error_payload


def evaluator_main(conn) -> None:
    """Entry of the evaluator's process forked from the fork server (--sandbox off)."""
    from ..attacker.process import _die_with_parent

    _die_with_parent()
    run_evaluator(conn)


def run_evaluator(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it ends this one
    try:
        boot = decode(conn.recv_bytes())
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in boot["env"].items()})
        sys.path[:] = [str(p) for p in boot["sys_path"]]
        from ..reproducibility import apply_thread_counts

        apply_thread_counts(tuple(boot["threads"]) if boot.get("threads") else None)
        spec = decode(conn.recv_bytes())
    except (EOFError, OSError):
        return  # the run ended before its first checkpoint
    try:
        net, eval_x, device = _build(spec)
    except BaseException as exc:  # noqa: BLE001 - the defender names the architecture and decides
        _send(conn, "failed", error_payload(exc, traceback.format_exc()))
        return
    _send(conn, "ready", {})
    while True:
        try:
            kind, payload = decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if kind != "state":
            return
        try:
            load_weights(net, payload)
        except WEIGHTS_DO_NOT_FIT as exc:
            _send(conn, "error", error_payload(exc))
            continue
        try:
            from ..training import predict_probs

            with torch.no_grad():
                probs = predict_probs(net, eval_x, device)
        except BaseException as exc:  # noqa: BLE001
            _send(conn, "failed", error_payload(exc, traceback.format_exc()))
            return
        _send(conn, "probs", {"probs": probs})


#: what :func:`load_weights` raises when the weights are not the architecture's
WEIGHTS_DO_NOT_FIT = (RuntimeError, TypeError, KeyError)


def load_weights(net: torch.nn.Module, state: dict) -> None:
    """A checkpoint's weights into the run's surrogate architecture, strictly: every key and shape must fit (a
    model that ctx.new_surrogate() did not build does not); raises one of WEIGHTS_DO_NOT_FIT otherwise. The
    conformance kit's `surrogate` rule uses this too."""
    net.load_state_dict(state, strict=True)


def _build(spec: dict):
    from ..models.factory import build_net
    from ..quiet import quiet_lightning

    quiet_lightning()
    device = torch.device(spec["device"])
    net = build_net(spec["arch"], num_classes=int(spec["num_classes"]), input_shape=tuple(spec["input_shape"]),
                    mean=tuple(spec["mean"]), std=tuple(spec["std"]), pretrained=bool(spec["pretrained"]))
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"the architecture factory returned a {type(net).__name__}, not a torch.nn.Module")
    return net.to(device).eval(), spec["eval_x"], device


def _send(conn, kind: str, payload) -> None:
    try:
        conn.send_bytes(encode((kind, payload)))
    except (OSError, EOFError, BrokenPipeError):
        pass  # the defender is gone


__all__ = ["evaluator_main", "run_evaluator"]
