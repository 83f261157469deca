"""`python -m stealbench.attacker.entry --fd N`: the attacker's process as the sandbox starts it (see sandbox.py).

File descriptor N is its end of a socket to the defender; what goes over it is session.py's protocol (a boot
message, the attack's name and options, then the pickled AttackerSpec: pickle one way only, defender -> attacker).
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stealbench.attacker.entry")
    parser.add_argument("--fd", type=int, required=True, help="this side's end of the socket to the defender")
    args = parser.parse_args(argv)
    from .session import serve  # Lightning comes once the attack is built (session.py): a check needs none

    serve(Connection(args.fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
