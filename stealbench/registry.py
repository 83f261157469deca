"""Registry[T]: named components (defenses, attacks, architectures, data sets) with their sources.

Keys are lowercase. Registering a taken key fails naming both sources; an unknown key fails listing the
close matches and pointing at ``stealbench list``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from .errors import DuplicateKeyError, StealbenchError, UnknownKeyError

T = TypeVar("T")

_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    obj: T
    description: str
    source: str  # the plugin that registered it


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # plural noun, as in `stealbench list <kind>`
        self._entries: dict[str, Entry[T]] = {}
        # Resolvers answer keys the registry does not hold (e.g. any timm model name for architectures).
        self._resolvers: list[tuple[Callable[[str], T | None], Callable[[], list[str]]]] = []

    def register(self, key: str, obj: T, *, description: str = "", source: str = "<unknown>") -> None:
        if not isinstance(key, str) or not _KEY_PATTERN.match(key):
            raise StealbenchError(
                f"{source} registered the {self.kind[:-1]} key {key!r}: keys must be lowercase letters, digits, "
                "'-', '_' or '.', starting with a letter or digit"
            )
        if key in self._entries:
            raise DuplicateKeyError(
                f"{self.kind[:-1]} key {key!r} is registered twice: by {self._entries[key].source} "
                f"and by {source}. Uninstall or block one of them (STEALBENCH_BLOCK_PLUGINS)."
            )
        if not description:
            doc = getattr(obj, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[key] = Entry(key, obj, description, source)

    def add_resolver(self, resolve: Callable[[str], T | None], candidates: Callable[[], list[str]]) -> None:
        """Answer keys outside the registry; `candidates` feeds the close-match suggestions."""
        self._resolvers.append((resolve, candidates))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, key: str) -> Entry[T]:
        if key in self._entries:
            return self._entries[key]
        raise self._unknown(key)

    def get(self, key: str) -> T:
        if key in self._entries:
            return self._entries[key].obj
        for resolve, _ in self._resolvers:
            found = resolve(key)
            if found is not None:
                return found
        raise self._unknown(key)

    def source(self, key: str) -> str:
        return self.entry(key).source

    def entries(self, contains: str | None = None) -> list[Entry[T]]:
        items = [self._entries[k] for k in sorted(self._entries)]
        if contains:
            items = [e for e in items if contains.lower() in e.key or contains.lower() in e.description.lower()]
        return items

    def close_matches(self, key: str, n: int = 5) -> list[str]:
        candidates = list(self._entries)
        for _, extra in self._resolvers:
            candidates += extra()
        lowered = key.lower()
        matches = difflib.get_close_matches(lowered, candidates, n=n, cutoff=0.6)
        # prefix matches catch what edit distance misses (e.g. "res" -> "resnet18")
        matches += [c for c in sorted(candidates) if c.startswith(lowered) and c not in matches][: n - len(matches)]
        return matches[:n]

    def _unknown(self, key: str) -> UnknownKeyError:
        close = self.close_matches(str(key))
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self._entries))
        return UnknownKeyError(
            f"unknown {self.kind[:-1]} {key!r}.{hint} Known {self.kind}: {known}. "
            f"Run `stealbench list {self.kind}` for descriptions, `stealbench plugins` for what is installed."
        )
