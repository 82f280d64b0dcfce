"""Upstream HTTP status -> gateway exception, shared by the providers.

An upstream 4xx is the caller's problem: its status and message go back unchanged
(vLLM's integer ``code`` is normalised to OpenAI's string codes). An upstream 5xx is
ours: 502 (503 when the upstream says it is overloaded).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamClientError, UpstreamError, UpstreamUnavailable

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
    if 400 <= status < 500:
        keep = {}
        if headers and "retry-after" in {k.lower() for k in headers}:
            keep = {"retry-after": next(v for k, v in headers.items() if k.lower() == "retry-after")}
        return UpstreamClientError(status, message, param=param,
                                   code=code or _VLLM_CODES.get(status), headers=keep)
    if status == 503:
        return UpstreamUnavailable(f"{upstream} is unavailable: {message}")
    return UpstreamError(f"{upstream} failed with HTTP {status}: {message}")
