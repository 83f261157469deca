"""`stealbench` command line. `fit` is a LightningCLI (see lightning_cli.py); `--version`, `plugins` and `list`
answer without importing Lightning."""

from __future__ import annotations

import argparse
import difflib
import sys

from . import __version__
from .errors import StealbenchError

COMMANDS = {
    "fit": "run one stealing experiment (victim -> defense -> attack -> results)",
    "plugins": "show loaded plugins, their versions and what they registered",
    "list": "list registered defenses, attacks, architectures or datasets",
}

USAGE = "usage: stealbench [--version] <command> [options]\n\ncommands:\n" + "".join(
    f"  {name:<10} {text}\n" for name, text in COMMANDS.items()) + (
    "\nexample: stealbench fit --defense deceptive --attack jbda\n"
    "help on one command: stealbench <command> --help\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE, end="")
            return 0
        if argv[0] in ("-V", "--version"):
            print(f"stealbench {__version__}")
            return 0
        command, rest = argv[0], argv[1:]
        if command == "fit":
            from .lightning_cli import fit_main

            return fit_main(rest)
        if command == "plugins":
            return plugins_command(rest)
        if command == "list":
            return list_command(rest)
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean `stealbench {close[0]}`?" if close else ""
        raise StealbenchError(f"unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}.")
    except StealbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def plugins_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stealbench plugins", description=COMMANDS["plugins"])
    parser.add_argument("--requirements", action="store_true",
                        help="print pip requirement lines pinning stealbench and every external plugin")
    args = parser.parse_args(argv)
    from .plugins import get_catalog

    catalog = get_catalog()
    if args.requirements:
        print(f"stealbench=={__version__}")
        for plugin in catalog.plugins:
            if not plugin.builtin:
                print(f"{plugin.distribution}=={plugin.version}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stealbench plugins", title_justify="left")
    for column in ("plugin", "distribution", "version", "registered"):
        table.add_column(column)
    for plugin in catalog.plugins:
        registered = "; ".join(f"{kind}: {', '.join(keys)}" for kind, keys in plugin.registered.items())
        table.add_row(plugin.name, plugin.distribution or "(built-in)", plugin.version, registered or "-")
    Console(highlight=False).print(table)
    return 0


def list_command(argv: list[str]) -> int:
    from .hookspecs import HOOK_KINDS

    kinds = list(HOOK_KINDS.values())
    parser = argparse.ArgumentParser(prog="stealbench list", description=COMMANDS["list"])
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(kinds)} (default: all)")
    parser.add_argument("--filter", default=None, help="only keys or descriptions containing this text")
    args = parser.parse_args(argv)
    if args.kind is not None and args.kind not in kinds:
        close = difflib.get_close_matches(args.kind, kinds, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise StealbenchError(f"cannot list {args.kind!r}.{hint} Choose one of: {', '.join(kinds)}.")
    from .plugins import get_catalog

    catalog = get_catalog()
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for kind in [args.kind] if args.kind else kinds:
        table = Table(title=kind, title_justify="left")
        for column in ("key", "description", "source"):
            table.add_column(column)
        for entry in catalog.registry(kind).entries(args.filter):
            table.add_row(entry.key, entry.description, entry.source)
        console.print(table)
        if kind == "architectures":
            console.print("  ...and any timm model name (e.g. resnet18), created without pretrained weights")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
