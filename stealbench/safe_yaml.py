"""The one reader for YAML that users hand to stealbench: `--config` files and values, grid, reproduction and
claims files.

PyYAML's safe loader is safe against code execution, not against hostile sizes: a 300-byte alias bomb ("billion
laughs") expands to billions of nodes, a 4 MB file takes minutes, deep nesting overflows the recursion limit,
and a repeated key silently keeps the last value. Here each of those is a one-line ConfigError that names the
limit, read before anything is built. No heavy imports (`grid --dry_run` and the analysis commands use it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError

#: bytes in one file (or one command-line value); the largest shipped grid is ~10 kB
MAX_BYTES = 1_000_000
#: `*alias` references in one document; anchors are for sharing a block or two, not for building structures
MAX_ALIASES = 100
#: nodes in the document with every alias expanded (what jsonargparse and dumps walk)
MAX_NODES = 100_000
#: nesting of mappings and lists
MAX_DEPTH = 50

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Refused(yaml.YAMLError):
    """A limit this reader enforces (a YAMLError, so that jsonargparse's handling of bad values applies too)."""


class GuardedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and depth while composing and refuses repeated mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise Refused(f"more than {MAX_ALIASES} aliases (line {mark.line + 1}); write the values out")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:  # checked before recursing: PyYAML's composer is recursive
            mark = self.peek_event().start_mark
            raise Refused(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base` merges: its keys may be overridden, as YAML intends
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise Refused(f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one")
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node) -> int:
    """Nodes of the document with aliases expanded, counted over the shared node graph (linear, no expansion)."""
    sizes: dict[int, int] = {}
    order: list[Node] = []
    stack = [root]
    while stack:  # post-order without recursion: children before parents
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = -1
        order.append(node)
        stack += _children(node)
    for node in reversed(order):
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def loads(text: str) -> Any:
    """One YAML document from a string, within the limits (yaml.YAMLError otherwise)."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES // 1_000_000} MB ({MAX_BYTES:,} bytes), the limit for "
                      "configuration; split it into smaller files")
    loader = GuardedLoader(text)
    try:
        node = loader.get_single_node()  # aliases and depth are counted while composing
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:  # before constructing: jsonargparse copies what it gets
            how = "through its aliases (an alias bomb?)" if loader.aliases else "(far more than a configuration)"
            raise Refused(f"holds more than {MAX_NODES:,} values {how}; write them out, in smaller files")
        return loader.construct_document(node)  # repeated keys are refused while constructing
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str) -> str:
    """A user's file as text: ConfigError when missing, unreadable, too large, binary or not UTF-8."""
    shown = f"{what} {str(path)!r}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more than the limit in memory, however large the file
    except FileNotFoundError:
        raise ConfigError(f"{shown} does not exist") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{shown} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{shown} is larger than {MAX_BYTES // 1_000_000} MB ({MAX_BYTES:,} bytes), the limit "
                          "for configuration files; split it into smaller files")
    if b"\x00" in data:
        offset = data.index(b"\x00")
        raise ConfigError(f"{shown} is a binary file, not YAML text (a NUL byte at offset {offset})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None


def parse(text: str, what: str) -> Any:
    """`loads`, with any YAML problem as one ConfigError line naming `what`."""
    try:
        return loads(text)
    except Refused as exc:
        raise ConfigError(f"{what} is refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML ({message(exc)})") from None
    except ValueError as exc:  # e.g. a timestamp that is no date (2020-13-45)
        raise ConfigError(f"{what} is not valid YAML ({exc})") from None
    except RecursionError:  # defensive: MAX_DEPTH should stop it first
        raise ConfigError(f"{what} is nested too deeply (the limit is {MAX_DEPTH} levels)") from None


def read(path: str | Path, what: str) -> Any:
    return parse(read_text(path, what), f"{what} {str(path)!r}")


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    spec = read(path, what)
    if not isinstance(spec, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping")
    return spec


def message(exc: Exception) -> str:
    """A YAML error in one line: where, and what is wrong (PyYAML's own text spans five or more)."""
    if isinstance(exc, Refused):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid YAML"])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


__all__ = ["GuardedLoader", "Refused", "MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "loads",
           "message", "parse", "read", "read_mapping", "read_text"]
