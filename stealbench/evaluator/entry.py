"""`python -m stealbench.evaluator.entry --fd N`: the evaluator's process as the sandbox starts it."""

from __future__ import annotations

import argparse
import sys
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stealbench.evaluator.entry")
    parser.add_argument("--fd", type=int, required=True, help="this side's end of the socket to the defender")
    args = parser.parse_args(argv)
    from .process import run_evaluator

    run_evaluator(Connection(args.fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
