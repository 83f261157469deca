"""How the attacker's process talks to the defender's: one small request/reply interface, and a pipe behind it.

The attacker's side only ever calls :meth:`Channel.call` (a request that waits for its reply) and
:meth:`Channel.notify` (a one-way message, e.g. a training log line). A network prediction API could implement
the same two methods; the pipe is just the transport that two local processes need.

Messages are plain data (JSON plus raw tensor buffers, see :func:`encode`): no object of one side is ever
reachable from the other, and decoding a message never runs the sender's code.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from abc import ABC, abstractmethod
from typing import Any

import torch

from .errors import StealbenchError


class Channel(ABC):
    """The attacker's end of the link to the defender's side."""

    @abstractmethod
    def call(self, op: str, **args: Any) -> Any:
        """Send request `op` and return its reply (raises the defender's error, if it refused)."""

    @abstractmethod
    def notify(self, op: str, **args: Any) -> None:
        """Send a one-way message (no reply)."""


class RemoteError(StealbenchError):
    """The other side refused a request or failed; carries its message (and its traceback text, if any)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


# ------------------------------------------------------------------------------------------------ encoding
# Not pickle: unpickling runs code chosen by the sender, and the defender's side must not run the attacker's code.
# A message is JSON (dicts with string keys, lists, strings, numbers, booleans, None) in which each tensor is a
# reference {"__tensor__": i, "dtype": ..., "shape": [...]} to the i-th raw buffer that follows the JSON.
_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}
_HEADER = struct.Struct("<QI")  # JSON length, number of buffers


def encode(message: Any) -> bytes:
    buffers: list[bytes] = []

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in _DTYPES:
                raise TypeError(f"cannot send a tensor of dtype {t.dtype}")
            raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t  # NumPy has no bfloat16: ship the bits
            buffers.append(raw.numpy().tobytes())
            return {"__tensor__": len(buffers) - 1, "dtype": dtype, "shape": list(t.shape)}
        if isinstance(obj, dict):
            if not all(isinstance(k, str) for k in obj):
                raise TypeError("only dicts with string keys can be sent")
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        if obj is None or isinstance(obj, (str, bool, int, float)):
            return obj
        raise TypeError(f"cannot send a {type(obj).__name__} between the attacker's and the defender's side")

    header = json.dumps(walk(message)).encode()
    lengths = struct.pack(f"<{len(buffers)}Q", *map(len, buffers))
    return b"".join([_HEADER.pack(len(header), len(buffers)), header, lengths, *buffers])


def decode(data: bytes) -> Any:
    try:
        json_len, count = _HEADER.unpack_from(data, 0)
        offset = _HEADER.size
        header = json.loads(data[offset:offset + json_len])
        offset += json_len
        lengths = struct.unpack_from(f"<{count}Q", data, offset)
        offset += 8 * count
        buffers = []
        for length in lengths:
            buffers.append(data[offset:offset + length])
            offset += length
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} bytes more or less than the header announces")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise RemoteError(f"malformed message between the attacker's and the defender's side: {exc}") from exc

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return _tensor(buffers, obj)
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(header)


def _tensor(buffers: list[bytes], ref: dict[str, Any]) -> torch.Tensor:
    try:
        dtype = _DTYPES[ref["dtype"]]
        raw = bytearray(buffers[int(ref["__tensor__"])])  # writable: tensors must own their memory
        storage_dtype = torch.int16 if dtype == torch.bfloat16 else dtype
        shape = [int(n) for n in ref["shape"]]
        if len(raw) != math.prod(shape) * storage_dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes do not hold a {ref['dtype']} tensor of shape {shape}")
        flat = torch.frombuffer(raw, dtype=storage_dtype) if raw else torch.empty(0, dtype=storage_dtype)
        return flat.view(dtype).reshape(shape)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise RemoteError(f"malformed tensor in a message between the two sides: {exc}") from exc


# ------------------------------------------------------------------------------------------------ the audit
#: the defender keeps the clean answers of about this many queries per run, in blocks of AUDIT_BLOCK consecutive
#: queries (so that the repeats of one image, which a label mode asks together, fall in one block)
AUDIT_ROWS = 4096
AUDIT_BLOCK = 64


def audit_stride(budget: int) -> int:
    """Every `stride`-th block of queries is audited: all of them up to AUDIT_ROWS queries."""
    return max(1, -(-int(budget) // AUDIT_ROWS))


def audited_queries(index: torch.Tensor, budget: int) -> torch.Tensor:
    """Bool mask: which query indices (0-based, in the oracle's counting order) the defender keeps clean answers
    for, to score the attacker's recovered answers (``label_mode/recovery_l1``). Both sides apply this rule."""
    return (index // AUDIT_BLOCK) % audit_stride(budget) == 0


# ------------------------------------------------------------------------------------------------ the pipe
class PipeChannel(Channel):
    """A :class:`Channel` over a multiprocessing connection (the attacker's process is the client)."""

    def __init__(self, conn) -> None:
        self._conn = conn
        # one request in flight at a time: the pipe pairs each reply with the request before it, so threads of an
        # attack that query at once would interleave their bytes and wait for each other's replies forever
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> Any:
        data = encode(("call", op, args))
        with self._lock:
            self._conn.send_bytes(data)
            kind, payload = decode(self._conn.recv_bytes())
        if kind == "error":
            raise rebuild_error(payload)
        return payload

    def notify(self, op: str, **args: Any) -> None:
        data = encode(("notify", op, args))
        with self._lock:
            self._conn.send_bytes(data)

    def send_final(self, kind: str, payload: Any) -> None:
        data = encode((kind, None, payload))
        with self._lock:
            self._conn.send_bytes(data)


def error_payload(exc: BaseException, details: str = "") -> dict[str, Any]:
    """An exception as plain data: its type's name and module, its message, and optionally a traceback text."""
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc), "details": details,
            "stealbench": isinstance(exc, StealbenchError)}


def rebuild_error(payload: dict[str, Any]) -> Exception:
    """The stealbench error class of that name (so callers can catch BudgetExceededError etc.), else RemoteError."""
    from . import errors

    cls = getattr(errors, payload["type"], None) if payload.get("stealbench") else None
    if isinstance(cls, type) and issubclass(cls, StealbenchError) and cls is not errors.UnknownKeyError:
        try:
            exc = cls(payload["message"])
            exc.details = payload.get("details", "")
            return exc
        except TypeError:
            pass
    return RemoteError(payload["message"], payload.get("details", ""))


__all__ = ["AUDIT_BLOCK", "AUDIT_ROWS", "Channel", "PipeChannel", "RemoteError", "audit_stride", "audited_queries", "decode", "encode", "error_payload", "rebuild_error"]
