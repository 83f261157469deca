"""Files only the defender's side can vouch for: bytes behind an HMAC whose key the attacker's side cannot read.

A plain checksum stored next to the data proves nothing against someone who can write the file: they recompute it.
Here the tag is an HMAC-SHA256 over the file's bytes, keyed by ``<root>/key`` (32 random bytes, mode 0600, created
on first use). The attacker's sandbox hides the whole folder holding the key (``stealbench.attacker.sandbox``), so
an attack plugin can neither read the key nor forge a tag; without the sandbox it is only as safe as file
permissions make it.

File layout: ``MAGIC`` line, the hex tag line, then the body.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

MAGIC = b"stealbench-sealed-1\n"
KEY_FILE = "key"
_TAG_LEN = 64  # hex digits of a SHA-256 HMAC


class NotSealed(Exception):
    """The file does not start with MAGIC: written by an older stealbench, or by someone else."""


class BrokenSeal(Exception):
    """The tag does not match the bytes: the file was damaged or rewritten without the key."""


def load_key(root: Path) -> bytes:
    """The key under `root`, created (atomically, mode 0600) if there is none yet."""
    path = Path(root) / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # atomic and refuses to replace: two runs starting together agree on one key
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 16:
        raise BrokenSeal(f"the key file {path} is too short ({len(key)} bytes); remove it to start a new key")
    return key


def tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def write(path: Path, body: bytes, key: bytes) -> None:
    """Write `body` sealed, atomically (a reader sees the old file or the new one, never half of one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + tag(key, body) + b"\n" + body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unsealed_body(data: bytes) -> bytes:
    """The body of a sealed file without checking its tag (a file the user chose, e.g. --victim.checkpoint)."""
    return data[len(MAGIC) + _TAG_LEN + 1:] if data.startswith(MAGIC) else data


def read(path: Path, key: bytes) -> bytes:
    """The body of a sealed file; NotSealed or BrokenSeal when it cannot be vouched for."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise NotSealed(str(path))
    head = len(MAGIC)
    stored, body = data[head:head + _TAG_LEN], data[head + _TAG_LEN + 1:]
    if data[head + _TAG_LEN:head + _TAG_LEN + 1] != b"\n" or not hmac.compare_digest(stored, tag(key, body)):
        raise BrokenSeal(str(path))
    return body


__all__ = ["BrokenSeal", "KEY_FILE", "MAGIC", "NotSealed", "load_key", "read", "tag", "unsealed_body", "write"]
