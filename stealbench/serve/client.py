"""A client of any Open Inference Protocol (KServe V2 REST) endpoint: httpx, bounded retries, one-line errors.

Timeouts, connection failures and 5xx answers are retried a bounded number of times with exponential backoff;
then an :class:`EndpointError` names the URL and what went wrong. A 4xx answer is not retried: it raises
:class:`EndpointRefused` with the server's own `error` message (and its `parameters`, e.g. the budget left).
Infer requests use the binary tensor data extension (binary.py) unless `binary=False`: V2 has no capability
negotiation, so an endpoint that refuses the first binary request with 400/415/422, or fails on it with a 5xx
(MLServer 1.7 answers a body it cannot parse as JSON with 500: its validation error handler cannot print raw
bytes), is asked again in JSON, and the client stays on JSON from then on (`fallback` says why). That first binary
request is not retried after a 5xx; the JSON one is, as any request.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from torch import Tensor

from ..config import check_url
from ..errors import EndpointError
from .binary import CONTENT_TYPE, HEADER, split_body
from .errors import V2Error
from .protocol import decode_infer_response, encode_binary_request, encode_infer_request

#: statuses of a first binary request after which the client asks again in JSON (an endpoint without the extension),
#: besides any 5xx
_NO_BINARY = (400, 415, 422)


class EndpointRefused(EndpointError):
    """The endpoint refused a request (4xx): `status`, the server's message, its `parameters`."""

    def __init__(self, message: str, status: int, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.parameters = parameters or {}


class V2Client:
    """One model behind a V2 endpoint. `api_key` goes as `Authorization: Bearer`, `account` as `X-Account`."""

    def __init__(self, url: str, model_name: str = "victim", *, api_key: str | None = None,
                 account: str | None = None, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 binary: bool = True) -> None:
        self.url = check_url(url)
        self.binary = bool(binary)  # infer in the binary tensor data extension (else JSON)
        self.fallback: str | None = None  # why the client went back to JSON, if it did
        self._binary_answered = False
        self.model_name = model_name
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.last_attempts = 0  # tries the last request took (1: no retry)
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if account:
            headers["X-Account"] = account
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False,
                                  follow_redirects=False)

    def __enter__(self) -> V2Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the routes ---------------------------------------------------------------------------------------------
    def live(self) -> bool:
        return self._request("GET", "/v2/health/live").status_code == 200

    def ready(self) -> bool:
        return self._request("GET", "/v2/health/ready").status_code == 200

    def metadata(self) -> dict[str, Any]:
        body = self._json(self._request("GET", f"/v2/models/{self.model_name}"), "model metadata")
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise EndpointError(f"{self._where()} answered model metadata without an 'inputs' list")
        return body

    def infer(self, images: Tensor, parameters: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Released probabilities (B, K) for float images (B, C, H, W) in [0, 1], and the response's parameters."""
        path = f"/v2/models/{self.model_name}/infer"
        if not self.binary:
            response = self._request("POST", path, json=encode_infer_request(images, parameters=parameters))
            return self._decode(response, len(images))
        body, length = encode_binary_request(images, parameters=parameters)
        try:
            response = self._request("POST", path, content=body, fail_5xx=not self._binary_answered,
                                     headers={HEADER: str(length), "Content-Type": CONTENT_TYPE})
        except EndpointRefused as exc:
            if self._binary_answered or not (exc.status in _NO_BINARY or exc.status >= 500):
                raise
            self.binary, self.fallback = False, str(exc)  # no binary extension there, it seems: JSON from now on
            return self.infer(images, parameters)
        self._binary_answered = True
        return self._decode(response, len(images))

    def _decode(self, response: httpx.Response, batch: int) -> tuple[Tensor, dict[str, Any]]:
        length = response.headers.get(HEADER)
        try:
            if length is None:
                return decode_infer_response(self._json(response, "infer"), batch)
            try:
                head, tail = split_body(response.content, length)
            except V2Error as exc:
                raise ValueError(exc.message) from None
            try:
                payload = json.loads(head)
            except ValueError:
                raise ValueError("its JSON header is not JSON") from None
            return decode_infer_response(payload, batch, tail)
        except ValueError as exc:
            raise EndpointError(f"{self._where()} answered an infer request with a malformed V2 response: "
                                f"{exc}") from None

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"the endpoint {self.url} (model {self.model_name!r})"

    def _request(self, method: str, path: str, *, fail_5xx: bool = False, **kwargs: Any) -> httpx.Response:
        """The response (< 400) after at most `retries` retries; EndpointRefused for a 4xx answer, or for a 5xx one
        at once, unretried, with `fail_5xx`; EndpointError when the tries are spent."""
        problem = ""
        for attempt in range(self.retries + 1):
            self.last_attempts = attempt + 1
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException:
                problem = f"timed out after {self._http.timeout.read:g}s"
                continue
            except httpx.TransportError as exc:
                problem = f"cannot be reached ({_reason(exc)})"
                continue
            if response.status_code >= 500 and not fail_5xx:
                problem = f"answered {response.status_code}: {_message(response)}"
                continue
            if response.status_code >= 400:
                params = _parameters(response)
                left = f" (queries left: {params['queries_left']})" if "queries_left" in params else ""
                verb = "refused" if response.status_code < 500 else "failed on"
                raise EndpointRefused(f"{self._where()} {verb} {method} {path} with {response.status_code}: "
                                      f"{_message(response)}{left}", response.status_code, params)
            return response
        tries = f"{self.retries + 1} tries" if self.retries else "1 try"
        raise EndpointError(f"{self._where()} {problem} ({tries}, {method} {path})")

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise EndpointError(f"{self._where()} answered {what} with something that is not JSON") from None


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip().splitlines() or [""])[0][:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:500]
    return str(body)[:200]


def _parameters(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    params = body.get("parameters") if isinstance(body, dict) else None
    return params if isinstance(params, dict) else {}


__all__ = ["EndpointError", "EndpointRefused", "V2Client", "check_url"]
