"""The V2 binary tensor data extension (as KServe and Triton define it): a JSON header, then raw tensor bytes.

A body in this form is a JSON object of exactly `Inference-Header-Content-Length` bytes (that HTTP header gives
its length), followed by the bytes of each binary tensor in the order the JSON lists them: little-endian,
row-major, no padding. A binary tensor has `parameters: {"binary_data_size": N}` (its byte count) instead of
`data`. A request asks for its outputs in binary with `parameters: {"binary_data": true}` on a requested output,
or `parameters: {"binary_data_output": true}` on the request (an output's own flag wins); the response then has
its own `Inference-Header-Content-Length`. A body without that header is all JSON, as before.

Pure Python + numpy/torch: the server (through protocol.py) and the client share these definitions.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import V2Error

HEADER = "Inference-Header-Content-Length"
#: the name servers list in GET /v2 `extensions` (Triton's spelling)
EXTENSION = "binary_tensor_data"
CONTENT_TYPE = "application/octet-stream"
#: little-endian numpy dtypes of the datatypes stealbench sends and answers
NUMPY_DTYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
_COUNT = re.compile(r"^[0-9]{1,19}$")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body; V2Error(400) unless `header_length` (the
    Inference-Header-Content-Length header, None when absent: all JSON) is a byte count within the body."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not _COUNT.match(text):
        raise V2Error(400, f"{HEADER} must be the JSON header's length in bytes (a non-negative integer), "
                           f"got {header_length[:40]!r}")
    size = int(text)
    if size > len(body):
        raise V2Error(400, f"{HEADER} says the JSON header is {size} bytes, but the whole request body is "
                           f"{len(body)} bytes")
    return body[:size], body[size:]


def _flag(container: Any, key: str, where: str) -> bool | None:
    value = container.get(key) if isinstance(container, dict) else None
    if value is not None and not isinstance(value, bool):
        raise V2Error(400, f"{where} {key!r} must be true or false, got {value!r}")
    return value


def wants_binary_output(payload: dict[str, Any], output_name: str) -> bool:
    """Whether the request asks for `output_name` in binary: that requested output's `binary_data`, else the
    request's `binary_data_output`, else no. V2Error(400) for a flag that is not a boolean."""
    default = _flag(payload.get("parameters"), "binary_data_output", "the request parameter")
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise V2Error(400, "'outputs' must be a list of requested output objects ({\"name\", \"parameters\"})")
        for out in outputs:
            if out.get("name") == output_name:
                own = _flag(out.get("parameters"), "binary_data", f"output {output_name!r}'s parameter")
                if own is not None:
                    return own
    return bool(default)


def binary_input(tensor: dict[str, Any], shape: list[int], datatype: str, tail: bytes) -> Tensor | None:
    """The flat float64 values of a binary input tensor (one request input: the whole tail is its bytes), or None
    for a JSON one (then no bytes may follow the header). V2Error(400) saying which size does not match."""
    params = tensor.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise V2Error(400, f"the input tensor's 'parameters' must be an object, got {type(params).__name__}")
    size = (params or {}).get("binary_data_size")
    if size is None:
        if tail:
            raise V2Error(400, f"{len(tail)} bytes follow the JSON header, but the input declares no "
                               "binary_data_size (set parameters.binary_data_size, or send 'data' without "
                               f"{HEADER})")
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise V2Error(400, f"binary_data_size must be a byte count (a non-negative integer), got {size!r}")
    if "data" in tensor:
        raise V2Error(400, "the input tensor has both 'data' and parameters.binary_data_size; send one of them")
    dtype = NUMPY_DTYPES[datatype]
    values = math.prod(shape)
    if size != values * dtype.itemsize:
        raise V2Error(400, f"binary_data_size {size} does not match shape {shape} of {datatype}: that is {values} "
                           f"values x {dtype.itemsize} bytes = {values * dtype.itemsize} bytes")
    if size != len(tail):
        raise V2Error(400, f"the inputs' binary_data_size add up to {size} bytes, but {len(tail)} bytes follow the "
                           f"JSON header ({HEADER})")
    return torch.from_numpy(np.frombuffer(tail, dtype=dtype).astype(np.float64))


def encode_body(header: dict[str, Any], tensors: list[bytes]) -> tuple[bytes, int]:
    """A body of the JSON `header` and the tensors' bytes after it, and the header's length (for HEADER)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([text, *tensors]), len(text)


def tensor_bytes(x: Tensor, datatype: str) -> bytes:
    """The little-endian row-major bytes of `x` as `datatype` (FP32 or UINT8)."""
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=NUMPY_DTYPES[datatype]).tobytes()


def binary_outputs(outputs: list[Any], tail: bytes) -> list[bytes | None]:
    """Each output's bytes (None: a JSON output), cut from the tail in order; ValueError if the sizes do not fit."""
    parts: list[bytes | None] = []
    offset = 0
    for out in outputs:
        params = out.get("parameters") if isinstance(out, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            parts.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"an output's binary_data_size is {size!r}, not a byte count")
        parts.append(tail[offset:offset + size])
        offset += size
    if offset != len(tail):
        raise ValueError(f"the outputs' binary_data_size add up to {offset} bytes, but {len(tail)} bytes follow "
                         "the JSON header")
    return parts


def frombuffer(raw: bytes, datatype: str, shape: list[int]) -> Tensor:
    """A float32 tensor of `shape` from an output's bytes; ValueError if they do not hold it."""
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"the output's datatype is {datatype!r}, expected FP32")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"the output's {len(raw)} binary bytes do not hold a {datatype} tensor of shape {shape}")
    return torch.from_numpy(np.frombuffer(raw, dtype=dtype).astype(np.float32)).reshape(shape)


__all__ = ["CONTENT_TYPE", "EXTENSION", "HEADER", "NUMPY_DTYPES", "binary_input", "binary_outputs", "encode_body",
           "frombuffer", "split_body", "tensor_bytes", "wants_binary_output"]
