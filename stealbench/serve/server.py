"""The V2 REST app (FastAPI): health, metadata and infer routes over an :class:`~.accounts.Accounts` ledger.

Every error is `{"error": "<one line>"}` with a 4xx/5xx status (and the account's counts where a budget is
involved): malformed JSON, wrong shape or datatype -> 400, a bad Authorization header -> 401, an unknown model
-> 404, an oversize body or batch -> 413, an exhausted budget -> 429, a defense that breaks a rule -> 500.
Infer requests and answers may use the binary tensor data extension (binary.py); its errors are JSON too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import EndpointError, StealbenchError
from .accounts import Accounts, account_of
from .binary import CONTENT_TYPE, EXTENSION, HEADER, split_body
from .errors import V2Error
from .protocol import (decode_infer_request, encode_binary_response, encode_infer_response, max_body_bytes,
                       model_metadata, parse_json)


def build_app(accounts: Accounts, *, model_name: str, input_shape: tuple[int, int, int], num_classes: int,
              max_batch: int, info: dict[str, Any] | None = None) -> FastAPI:
    """`info`: extra metadata parameters (defense, data set) shown at GET /v2/models/{name}."""
    app = FastAPI(title="stealbench", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    body_limit = max_body_bytes(max_batch, input_shape)
    metadata = model_metadata(model_name, input_shape, num_classes, max_batch=max_batch, budget=accounts.budget,
                              **(info or {}))

    def check_model(name: str) -> None:
        if name != model_name:
            raise V2Error(404, f"unknown model {name!r}; this server serves {model_name!r}")

    @app.exception_handler(V2Error)
    async def _v2_error(request: Request, exc: V2Error) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{exc.detail} ({request.method} {request.url.path})"},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()[:1]}"}, status_code=400)

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "stealbench", "version": __version__, "extensions": [EXTENSION]}

    @app.get("/v2/health/live")
    def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, Any]:
        return {"ready": True}

    @app.get("/v2/models/{name}")
    def model(name: str) -> dict[str, Any]:
        check_model(name)
        return metadata

    @app.get("/v2/models/{name}/ready")
    def model_ready(name: str) -> dict[str, Any]:
        check_model(name)
        return {"name": model_name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        check_model(name)
        account = account_of(request.headers.get("authorization"), request.headers.get("x-account"))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > body_limit:
            raise V2Error(413, f"request body of {declared} bytes exceeds the {body_limit} bytes a batch of "
                               f"--max_batch {max_batch} images needs")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > body_limit:
                raise V2Error(413, f"request body exceeds the {body_limit} bytes a batch of --max_batch "
                                   f"{max_batch} images needs")
        header_length = request.headers.get(HEADER)
        head, tail = split_body(bytes(body), header_length)
        what = "the request body" if header_length is None else f"the JSON header (the first {len(head)} bytes)"
        payload = parse_json(head, what)
        images, meta = decode_infer_request(payload, input_shape, max_batch, tail)
        try:
            probs, counts = await run_in_threadpool(accounts.answer, account, images)
        except EndpointError as exc:  # a proxy's upstream endpoint failed
            raise V2Error(502, f"the upstream endpoint failed: {exc}") from None
        except StealbenchError as exc:  # a defense that broke a rule: the server's fault, not the client's
            raise V2Error(500, f"the defended model failed: {exc}") from None
        if meta["binary_output"]:
            content, length = encode_binary_response(model_name, probs, meta["id"], counts)
            return Response(content, media_type=CONTENT_TYPE, headers={HEADER: str(length)})
        return JSONResponse(encode_infer_response(model_name, probs, meta["id"], counts))

    return app
