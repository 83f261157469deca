"""The attacker's process from its start: boot, the attack handshake, then the run (both entries: the fork
server's child and the sandbox's `python -m stealbench.attacker.entry`).

Protocol on the link (plain data, stealbench.transport, unless said): the defender sends a boot message
({sys_path, env, threads}); then requests, each answered at once:

- ("check", choice): build the attack from its name and options -> ("resolved", resolved) or ("failed", error);
- ("attack", {choice, limits}): build it and call its validate(budget, num_classes, pool_size): the same answers;
  the attack built is the one that runs;
- ("label_mode", {choice, num_classes, budget}): build the label mode from its name and options ->
  ("label_mode", {key, source, plugin, answers, effective_budget}) or ("failed", error); the mode built last is
  the one the run uses (budget: null when only its options are checked);
- ("help", {key}) -> ("help", {text}): the attack's options;
- ("names", {keys}) -> ("names", {errors}): the message for each key that names no attack (nothing is built);
- ("spec", {}): the next message is the pickled AttackerSpec (defender -> attacker only: the defender never
  unpickles); the run starts (process.run_attacker) and the referee's protocol takes over.

The attack's and the label mode's modules are imported here and nowhere on the defender's side (see
attacker/choice.py, attacker/label_choice.py).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback

from ..transport import decode, encode, error_payload


def attacker_main(conn) -> None:
    """Entry point of the attacker's process, forked from the fork server (--sandbox off)."""
    import signal

    from .process import _die_with_parent

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it ends this one
    serve(conn)


def serve(conn) -> None:
    try:
        boot = decode(conn.recv_bytes())
    except (EOFError, OSError):
        return  # the run ended before its attack (an error on the defender's side)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in boot["env"].items()})
    sys.path[:] = [str(p) for p in boot["sys_path"]]
    from ..reproducibility import apply_thread_counts

    apply_thread_counts(tuple(boot["threads"]) if boot.get("threads") else None)
    from .choice import AttackChoice, attack_help, build_attack, unknown_keys
    from .label_choice import LabelModeChoice
    from .label_modes.base import build_label_mode

    attack = label_mode = None
    while True:
        try:
            op, payload = decode(conn.recv_bytes())
        except (EOFError, OSError, ValueError, TypeError):
            return
        try:
            if op == "spec":
                break
            if op == "names":
                _send(conn, "names", {"errors": unknown_keys([str(k) for k in payload["keys"]])})
                continue
            if op == "label_mode":
                budget = payload.get("budget")
                label_mode, resolved = build_label_mode(LabelModeChoice.from_data(payload["choice"]),
                                                        int(payload["num_classes"]),
                                                        None if budget is None else int(budget))
                _send(conn, "label_mode", resolved)
                continue
            if op == "help":
                _send(conn, "help", {"text": attack_help(str(payload["key"]))})
                continue
            built, resolved = build_attack(AttackChoice.from_data(payload["choice"] if op == "attack" else payload),
                                           payload.get("limits") if op == "attack" else None)
            if op == "attack":
                attack = built
            _send(conn, "resolved", resolved)
            if op == "attack":
                from . import process  # noqa: F401 - Lightning, imported while the defender trains its victim
        except BaseException as exc:  # noqa: BLE001 - the defender names the attack and decides
            from ..errors import StealbenchError

            _send(conn, "failed", error_payload(exc, "" if isinstance(exc, StealbenchError)
                                                else traceback.format_exc()))
    from .process import run_attacker

    try:
        spec = pickle.loads(conn.recv_bytes())
    except Exception as exc:  # noqa: BLE001 - e.g. the label mode's module is not importable here: one line
        from ..transport import PipeChannel

        PipeChannel(conn).send_final("failed", error_payload(exc, traceback.format_exc()))
        return
    run_attacker(conn, spec, attack, label_mode)


def _send(conn, kind: str, payload) -> None:
    try:
        conn.send_bytes(encode((kind, payload)))
    except (OSError, EOFError, BrokenPipeError):
        pass  # the defender is gone


__all__ = ["attacker_main", "serve"]
