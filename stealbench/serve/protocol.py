"""The Open Inference Protocol (KServe "V2") REST wire format: request decoding with validation, responses.

Pure Python + torch (no web framework), so the server, the client and the tests share one definition.
One infer request carries one input tensor: a batch of images shaped [B, C, H, W], datatype FP32 (pixel space
[0, 1]) or UINT8 (0..255), `data` flat in row-major order (nested lists are accepted too). The answer is one
output `probs` shaped [B, K], FP32, with the account's `queries_used` and `queries_left` in `parameters`.
Either tensor may travel as raw bytes after a JSON header instead (the binary tensor data extension, binary.py):
the images decoded either way are bit-identical, and so are the probabilities answered.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import Tensor

from .binary import binary_input, binary_outputs, encode_body, frombuffer, tensor_bytes, wants_binary_output
from .errors import V2Error

INPUT_NAME = "input-0"
OUTPUT_NAME = "probs"
DATATYPES = ("FP32", "UINT8")
#: JSON text per pixel a request may plausibly need (a float32 in decimal with its comma) plus a margin
BYTES_PER_VALUE = 28
_PIXEL_TOLERANCE = 1e-6


def max_body_bytes(max_batch: int, input_shape: tuple[int, int, int]) -> int:
    return max_batch * math.prod(input_shape) * BYTES_PER_VALUE + 64 * 1024


def model_metadata(name: str, input_shape: tuple[int, int, int], num_classes: int, **extra: Any) -> dict[str, Any]:
    """`GET /v2/models/{name}`: name, platform, inputs and outputs (-1: any batch size)."""
    return {"name": name, "versions": ["1"], "platform": "stealbench",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *input_shape]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, num_classes]}],
            "parameters": extra}


def parse_json(body: bytes, what: str = "the request body") -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise V2Error(400, f"malformed JSON in {what}: {exc}") from None
    if not isinstance(payload, dict):
        raise V2Error(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    return payload


def decode_infer_request(payload: dict[str, Any], input_shape: tuple[int, int, int], max_batch: int,
                         tail: bytes = b"") -> tuple[Tensor, dict[str, Any]]:
    """The images (B, C, H, W) float32 in [0, 1] of a V2 infer request, and the request's `id`/`parameters`;
    V2Error(400/413) saying exactly what is wrong. `tail`: the bytes after a binary request's JSON header."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise V2Error(400, "'inputs' must be a list holding exactly one tensor object "
                           '({"name", "shape", "datatype", "data"})')
    tensor = inputs[0]
    binary = isinstance(tensor.get("parameters"), dict) and "binary_data_size" in tensor["parameters"]
    missing = [k for k in ("shape", "datatype", *(() if binary else ("data",))) if k not in tensor]
    if missing:
        raise V2Error(400, f"the input tensor lacks {', '.join(repr(k) for k in missing)}")
    shape, datatype, data = tensor["shape"], tensor["datatype"], tensor.get("data")
    expected = f"[B, {', '.join(map(str, input_shape))}]"
    if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise V2Error(400, f"'shape' must be a list of integers {expected}, got {shape!r}")
    if len(shape) != 4 or tuple(shape[1:]) != tuple(input_shape) or shape[0] < 1:
        raise V2Error(400, f"wrong shape {shape}: this model takes images shaped {expected} with B >= 1")
    if shape[0] > max_batch:
        raise V2Error(413, f"batch of {shape[0]} images exceeds the server's --max_batch {max_batch}; "
                           "split it into smaller requests")
    if datatype not in DATATYPES:
        raise V2Error(400, f"wrong datatype {datatype!r}: this model takes {' or '.join(DATATYPES)} "
                           "(FP32 pixels in [0, 1], UINT8 pixels in 0..255)")
    values = binary_input(tensor, shape, datatype, tail)
    if values is None:
        values = _json_values(data)
    if values.numel() != math.prod(shape):
        raise V2Error(400, f"'data' holds {values.numel()} values, but shape {shape} needs {math.prod(shape)}")
    if not torch.isfinite(values).all():
        raise V2Error(400, "the input tensor holds NaN or infinite values")
    if datatype == "UINT8":
        if (values != values.round()).any() or values.min() < 0 or values.max() > 255:
            raise V2Error(400, "UINT8 'data' must be integers in 0..255")
        values = values / 255.0
    elif values.min() < -_PIXEL_TOLERANCE or values.max() > 1 + _PIXEL_TOLERANCE:
        raise V2Error(400, f"FP32 pixels must lie in [0, 1] (normalisation is inside the model), got values in "
                           f"[{values.min().item():.3g}, {values.max().item():.3g}]; send UINT8 for 0..255 images")
    images = values.clamp(0, 1).to(torch.float32).reshape(shape)
    meta = {"id": payload.get("id"), "parameters": payload.get("parameters") or {},
            "binary_output": wants_binary_output(payload, OUTPUT_NAME)}
    return images, meta


def _json_values(data: Any) -> Tensor:
    if not isinstance(data, list):
        raise V2Error(400, f"'data' must be a JSON list of numbers, got {type(data).__name__}")
    try:
        return torch.tensor(data, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise V2Error(400, "'data' must be a flat (or nested) list of numbers") from None


def encode_infer_response(model_name: str, probs: Tensor, request_id: Any = None,
                          parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    probs = probs.detach().float().cpu()
    body: dict[str, Any] = {"model_name": model_name,
                            "outputs": [{"name": OUTPUT_NAME, "shape": list(probs.shape), "datatype": "FP32",
                                         "data": probs.flatten().tolist()}],
                            "parameters": parameters or {}}
    if request_id is not None:
        body["id"] = request_id
    return body


def encode_binary_response(model_name: str, probs: Tensor, request_id: Any = None,
                           parameters: dict[str, Any] | None = None) -> tuple[bytes, int]:
    """The response body in the binary extension (the JSON header, then `probs` as FP32 bytes) and the header's
    length, for the response's Inference-Header-Content-Length."""
    probs = probs.detach().float().cpu()
    raw = tensor_bytes(probs, "FP32")
    header = encode_infer_response(model_name, probs[:0], request_id, parameters)
    header["outputs"][0].update(shape=list(probs.shape), parameters={"binary_data_size": len(raw)})
    del header["outputs"][0]["data"]
    return encode_body(header, [raw])


def encode_binary_request(images: Tensor, request_id: str | None = None,
                          parameters: dict[str, Any] | None = None) -> tuple[bytes, int]:
    """A V2 infer request in the binary extension for float images (B, C, H, W) in [0, 1], asking for the
    output in binary too: (body, JSON header length) (the client's side)."""
    x = images.detach().float().cpu().contiguous()
    raw = tensor_bytes(x, "FP32")
    header = encode_infer_request(x[:0], request_id, {**(parameters or {}), "binary_data_output": True})
    header["inputs"][0].update(shape=list(x.shape), parameters={"binary_data_size": len(raw)})
    del header["inputs"][0]["data"]
    return encode_body(header, [raw])


def encode_infer_request(images: Tensor, request_id: str | None = None,
                         parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A V2 infer request for float images (B, C, H, W) in [0, 1] (the client's side)."""
    x = images.detach().float().cpu().contiguous()
    body: dict[str, Any] = {"inputs": [{"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.flatten().tolist()}]}
    if request_id is not None:
        body["id"] = request_id
    if parameters:
        body["parameters"] = parameters
    return body


def decode_infer_response(payload: Any, batch: int, tail: bytes = b"") -> tuple[Tensor, dict[str, Any]]:
    """Probabilities (batch, K) float32 and `parameters` of a V2 infer response (JSON, or binary: `tail` holds the
    bytes after its JSON header); ValueError saying what is wrong."""
    if not isinstance(payload, dict) or not isinstance(payload.get("outputs"), list) or not payload["outputs"]:
        raise ValueError("the response holds no 'outputs' list")
    outputs = payload["outputs"]
    raws = binary_outputs(outputs, tail)
    index = next((i for i, o in enumerate(outputs) if isinstance(o, dict) and o.get("name") == OUTPUT_NAME), 0)
    out = outputs[index]
    if not isinstance(out, dict):
        raise ValueError("the response's output is not a tensor object")
    shape, data = out.get("shape"), out.get("data")
    if not (isinstance(shape, list) and len(shape) == 2 and shape[0] == batch and isinstance(shape[1], int)
            and shape[1] >= 1):
        raise ValueError(f"the response's output has shape {shape!r}, expected [{batch}, K]")
    if raws[index] is not None:
        probs = frombuffer(raws[index], out.get("datatype"), shape)
        params = payload.get("parameters")
        return probs, params if isinstance(params, dict) else {}
    try:
        probs = torch.tensor(data, dtype=torch.float32).reshape(shape)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError("the response's output 'data' is not a list of numbers of its shape") from None
    params = payload.get("parameters")
    return probs, params if isinstance(params, dict) else {}
