"""`python -m stealbench.attacker.entry --fd N`: the attacker's process as the sandbox starts it (see sandbox.py).

File descriptor N is its end of a socket to the defender. The first message (plain data) gives sys.path, so that
the attack's classes can be imported; the second is the pickled AttackerSpec. Pickle goes one way only: the
defender wrote it, this side reads it; everything after is the plain-data protocol of ``stealbench.transport``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import traceback
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stealbench.attacker.entry")
    parser.add_argument("--fd", type=int, required=True, help="this side's end of the socket to the defender")
    args = parser.parse_args(argv)
    conn = Connection(args.fd)
    # imported before the spec arrives: the defender starts this process early, and trains its victim meanwhile
    from ..transport import PipeChannel, decode, error_payload
    from .process import run_attacker

    try:
        boot = decode(conn.recv_bytes())
    except EOFError:
        return 0  # the run ended before its attack (an error on the defender's side)
    sys.path[:] = [str(p) for p in boot["sys_path"]]
    try:
        spec = pickle.loads(conn.recv_bytes())
    except Exception as exc:  # noqa: BLE001 - e.g. the attack's module is not importable here: say so, in one line
        PipeChannel(conn).send_final("failed", error_payload(exc, traceback.format_exc()))
        return 1
    run_attacker(conn, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
