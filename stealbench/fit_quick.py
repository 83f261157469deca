"""`stealbench fit` answers that need no Lightning: `fit --help` and a mistyped option name.

`fit`'s parser is a LightningCLI (lightning_cli.py): building it imports torch, Lightning and torchmetrics (with
torchvision and scipy), 5-10 s before the first argument is read. Its help text and its option names depend only
on the installed code, so the first `fit` that builds the parser stores them under the cache folder
(``$STEALBENCH_CACHE_DIR/cli``, default ~/.cache/stealbench/cli), named by a fingerprint of that code: the
stealbench package's files, the installed distributions, the plugin entry points and their modules' files, the
plugin switches (STEALBENCH_PLUGINS, STEALBENCH_BLOCK_PLUGINS) and, for the help text, the terminal width. Later
`fit --help` prints the stored text, and an option name the parser does not know fails as the parser would say,
both without importing torch. Any other change of the installed code makes a new fingerprint, hence a miss: the
parser is built as before and the answer stored again. Only stdlib imports here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .arguments import argparse_message, help_hint

PROG = "stealbench fit"
HELP_ARGS = (["--help"], ["-h"])
#: a negative number is a value, not an option (argparse's own rule)
_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")
#: environment variables that change what the parser holds or how its help is laid out
_ENV = ("STEALBENCH_PLUGINS", "STEALBENCH_BLOCK_PLUGINS")
_ENV_PREFIXES = ("JSONARGPARSE_", "LIGHTNING_")


def cache_dir() -> Path:
    return Path(os.environ.get("STEALBENCH_CACHE_DIR") or Path.home() / ".cache" / "stealbench") / "cli"


def _files(folder: str | Path, limit: int = 5000) -> list[tuple[str, int, int]]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((path, st.st_mtime_ns, st.st_size))
                if len(out) >= limit:
                    return out
    return out


def _plugin_sources() -> list[Any]:
    """The plugin entry points, and the files of the modules they name (an editable plugin changes there)."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    from .plugins import ATTACK_ENTRY_POINT_GROUP, ENTRY_POINT_GROUP

    out: list[Any] = []
    for group in (ENTRY_POINT_GROUP, ATTACK_ENTRY_POINT_GROUP):
        for ep in entry_points(group=group):
            dist = ep.dist
            out.append((group, ep.name, ep.value, dist.name if dist else None, dist.version if dist else None))
            try:
                spec = find_spec(ep.value.split(":")[0].split(".")[0])  # a top-level name: found, not imported
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                continue
            for location in spec.submodule_search_locations or ([spec.origin] if spec.origin else []):
                out += _files(location) if os.path.isdir(location) else [(location, os.stat(location).st_mtime_ns)]
    return out


def _distributions() -> list[tuple[str, int]]:
    """Every installed distribution's metadata folder (an install or upgrade renames or touches one)."""
    out = []
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in sorted(names):
            if name.endswith((".dist-info", ".egg-info", ".pth", ".egg-link")):
                try:
                    out.append((os.path.join(entry, name), os.stat(os.path.join(entry, name)).st_mtime_ns))
                except OSError:
                    pass
    return out


def fingerprint() -> str:
    """Computed once per search path and plugin switches (a test may install a plugin distribution in-process)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k in _ENV or k.startswith(_ENV_PREFIXES)))
    return _fingerprint(tuple(sys.path), env)


@lru_cache(maxsize=8)
def _fingerprint(path: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str:
    from . import __version__

    parts = [sys.version, sys.executable, __version__, path, env, _files(Path(__file__).parent), _distributions(),
             _plugin_sources()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _help_path() -> Path:
    return cache_dir() / f"fit-help-{fingerprint()}-{shutil.get_terminal_size().columns}.txt"


def _options_path() -> Path:
    return cache_dir() / f"fit-options-{fingerprint()}.json"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _write(path: Path, text: str) -> None:
    """Best effort: a read-only or full cache folder only costs the next call its speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def is_help(args: list[str]) -> bool:
    return list(args) in HELP_ARGS


def store_help(text: str) -> None:
    _write(_help_path(), text)


def store_options(parser: Any) -> None:
    """The parser's option strings and how many values each takes; written once per fingerprint."""
    path = _options_path()
    if not path.exists():
        options = {o: a.nargs for a in parser._actions for o in a.option_strings}
        _write(path, json.dumps(options, sort_keys=True))


def _known_options() -> dict[str, Any] | None:
    text = _read(_options_path())
    try:
        options = json.loads(text) if text else None
    except ValueError:
        return None
    return options if isinstance(options, dict) else None


def _looks_like_option(token: str) -> bool:
    return token.startswith("-") and not _NEGATIVE.match(token) and " " not in token


def unknown_option(args: list[str], options: dict[str, Any]) -> str | None:
    """The first option name the parser does not know, where that is certain from the names alone; None when
    the command line holds something only the parser can judge (help, a component's own option such as
    --defense.beta, a possible abbreviation, a missing value): then the parser decides, as before."""
    names = [a.partition("=")[0] for a in args]
    if any(n in ("-h", "--help") or n.endswith(".help") or n.startswith("--print_config") for n in names):
        return None  # help (wherever it stands) and --print_config are the parser's: it answers before errors
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, _ = token.partition("=")
        if not _looks_like_option(token) or name in ("-", "--"):
            return None
        if name == "--attack" or name.startswith("--attack."):  # taken out before the parser (attack_args.py)
            i += 1 if eq or i + 1 >= len(args) else 2
            continue
        if name in options:
            nargs = options[name]
            if eq or nargs == 0:
                i += 1
            elif nargs in (None, 1):
                if i + 1 >= len(args) or _looks_like_option(args[i + 1]):
                    return None  # "expects a value": the parser's message
                i += 2
            elif nargs == "?":
                i += 2 if i + 1 < len(args) and not _looks_like_option(args[i + 1]) else 1
            else:
                return None
            continue
        if "." in name or not name.startswith("--") or any(o.startswith(name) for o in options):
            return None
        return name
    return None


def quick_answer(args: list[str]) -> str | None:
    """`fit --help`'s stored text, or None. Raises the parser's ConfigError for an unknown option name."""
    from .errors import ConfigError

    if is_help(args):
        return _read(_help_path())
    options = _known_options()
    unknown = unknown_option(list(args), options) if options else None
    if unknown is not None:
        message = argparse_message(f"unrecognized arguments: {unknown}", list(options))
        raise ConfigError(f"{message} {help_hint(PROG)}")
    return None
