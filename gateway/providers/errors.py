"""Upstream HTTP status -> gateway exception, shared by the providers.

An upstream 4xx is the caller's problem: its status and message go back unchanged
(vLLM's integer ``code`` is normalised to OpenAI's string codes). An upstream 5xx is
ours: 502 (503 when the upstream says it is overloaded). A 5xx other than 502-504 may
have been caused by the request (an engine bug one body triggers): it is marked
``request_suspect`` for the breaker (gateway.resilience). Upstream messages are clipped
to ``MESSAGE_CHARS``: an upstream may echo the request.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamClientError, UpstreamError, UpstreamUnavailable, clip

MESSAGE_CHARS = 1024

_VLLM_CODES = {404: "model_not_found", 429: "rate_limit_exceeded"}


def _error_fields(payload: Any) -> tuple[str | None, str | None, str | None]:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            code = err.get("code")
            return (str(msg) if msg is not None else None, err.get("param"),
                    code if isinstance(code, str) else None)
        if isinstance(err, str):
            return err, None, None
    return None, None, None


def from_status(status: int, raw: bytes | Any, headers: dict[str, str] | None = None,
                upstream: str = "upstream") -> GatewayError:
    payload = raw
    if isinstance(raw, bytes | bytearray):
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = raw.decode("utf-8", "replace")[:500]
    message, param, code = _error_fields(payload)
    if message is None:
        message = payload if isinstance(payload, str) and payload else f"HTTP {status}"
    message = clip(message, MESSAGE_CHARS)
    if 400 <= status < 500:
        keep = {}
        if headers and "retry-after" in {k.lower() for k in headers}:
            keep = {"retry-after": next(v for k, v in headers.items() if k.lower() == "retry-after")}
        return UpstreamClientError(status, message, param=param,
                                   code=code or _VLLM_CODES.get(status), headers=keep)
    if status == 503:
        return UpstreamUnavailable(f"{upstream} is unavailable: {message}")
    err = UpstreamError(f"{upstream} failed with HTTP {status}: {message}")
    err.request_suspect = status >= 500 and status not in (502, 504)
    return err
