"""Command-line parsing errors as one short message, for every command.

argparse and jsonargparse answer bad input with the whole usage (about 60 lines for `fit`) and `sys.exit(2)`;
jsonargparse's type errors also list every union member it tried. Here each becomes a ConfigError saying which
option got what and what it expects; `cli.main` prints it as `error: ...` and returns 2. No heavy imports: `list`
and `plugins` use this module too.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

from .errors import ConfigError

_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "NoneType": "null", "pathlib.Path": "a path", "dict": "a mapping", "list": "a list"}


def help_hint(prog: str) -> str:
    return f"(see {prog} --help)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with short errors (a ConfigError, not usage + exit) and exact option names (no prefix guessing:
    `--out` must not silently mean `--output_dir`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{argparse_message(message, self.known_options())} {help_hint(self.prog)}")

    def known_options(self) -> list[str]:
        return [o for a in self._actions if a.help != argparse.SUPPRESS for o in a.option_strings]

    def add_option(self, name: str, *args: Any, **kwargs: Any) -> argparse.Action:
        """`--some_option`, plus `--some-option` as a hidden alias (the spelling older versions used)."""
        action = self.add_argument(name, *args, **kwargs)
        dashed = name.replace("_", "-")
        if dashed != name:
            hidden = {k: v for k, v in kwargs.items() if k not in ("help", "metavar")}
            self.add_argument(dashed, dest=action.dest, help=argparse.SUPPRESS, **hidden)
        return action


def at_least(minimum: int, option: str) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, with a message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{option} expects an integer, got {text!r}") from None
        if value < minimum:
            raise ConfigError(f"{option} must be an integer >= {minimum}, got {value}")
        return value

    return parse


def argparse_message(message: str, known: Iterable[str] = ()) -> str:
    """argparse's and jsonargparse's plain messages, shortened: unknown options get close matches."""
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        options = [t for t in unknown[1].split() if t.startswith("-")] or unknown[1].split()
        first = options[0].split("=")[0]
        close = difflib.get_close_matches(first, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown option {first}{hint}" if first.startswith("-") else f"unexpected argument {first!r}"
    return message.removeprefix("argument ")


def type_name(*types: str) -> str:
    """`<class 'int'>` -> 'an integer'; Literals, however many, -> 'one of a, b'; several -> 'a or b'."""
    choices: list[str] = []
    names: list[str] = []
    for text in types:
        literal = re.match(r"typing\.Literal\[(.*)\]$", text.strip())
        if literal:
            choices += [v.strip().strip("'\"") for v in literal[1].split(",")]
            continue
        cls = re.match(r"<class '([^']+)'>$", text.strip())
        name = cls[1] if cls else text.strip()
        names.append(_TYPE_NAMES.get(name, f"a {name.rpartition('.')[2]}"))
    if choices:
        names.insert(0, "one of " + ", ".join(dict.fromkeys(choices)))
    return " or ".join(dict.fromkeys(names))


def _subtypes(listing: str) -> list[str]:
    return re.findall(r"typing\.Literal\[[^\]]*\]|<class '[^']+'>", listing)


def jsonargparse_message(message: str, prog: str, known: Iterable[str] = (),
                         describe: Callable[[str], str] = str) -> str:
    """A jsonargparse ArgumentError message -> one line naming the option, the value and the expected type.

    `describe` turns a component's class path into what the user typed (its registry key)."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    option = "--" + ".".join(keys) if keys else None
    refused = re.search(r"Option '([^']+)' is not accepted", message)
    component = re.search(r"given class_path '([^']+)'", message)
    if option and refused:
        owner = describe(component[1]) if component else "this component"
        return (f"{option}.{refused[1]} is not an option of {owner} (see {prog} {option}.help "
                f"{owner.split()[0]})")
    if refused and not keys:  # a config file's key that is no option
        known_keys = [k.lstrip("-") for k in known]
        close = difflib.get_close_matches(refused[1], known_keys, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown option {refused[1]!r} in the configuration{hint} {help_hint(prog)}"
    single = re.search(r"Expected a (.+?)\. Got value: (.*)$", message, re.MULTILINE)
    if option and single:
        return f"{option} expects {type_name(single[1])}, got {single[2]!r} {help_hint(prog)}"
    union = re.search(r"Subtypes: \[(.*)\]$", message, re.MULTILINE)
    given = re.search(r"Given value: (.*)$", message, re.MULTILINE)
    if option and union and given and not component:
        return f"{option} expects {type_name(*_subtypes(union[1]))}, got {given[1]!r} {help_hint(prog)}"
    if option and component:
        inner = message.split(component[0], 1)[1]
        reason = next((line.strip() for line in inner.splitlines()[1:] if line.strip()), "invalid value")
        return f"{option} ({describe(component[1])}): {reason} {help_hint(prog)}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = argparse_message(" ".join(lines[:2]), known) if lines else "invalid arguments"
    return f"{text} {help_hint(prog)}"


def check_folder(option: str, path: str | Path, *, file: bool = False) -> None:
    """A folder (or with `file`, a file) to be created: no existing file may stand where a folder must be."""
    path = Path(path)
    if file and path.is_dir():
        raise ConfigError(f"--{option} {str(path)!r} is a folder; name the file to write")
    existing = next((p for p in (path.parent if file else path, *path.parents) if p.exists()), Path("."))
    if existing.is_dir():
        return
    if existing == path:
        raise ConfigError(f"--{option} {str(path)!r} is a file, not a folder")
    raise ConfigError(f"--{option} {str(path)!r} is not a folder ({str(existing)!r} is a file)")
