"""The gateway's one exception hierarchy and the one place it becomes OpenAI's envelope.

    GatewayError (500 server_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── BodyTooLarge (413)
    │   └── RequestTimeout (408: the body did not arrive in time)
    ├── AuthenticationFailed (401 invalid_api_key)
    ├── PermissionDenied (403)
    ├── NotFound (404)
    │   └── ModelNotFound (404 model_not_found)
    ├── Conflict (409)
    ├── RateLimited (429, retry-after)
    ├── DatabaseUnavailable (503 database_unavailable: the database is away; retry-after 1)
    ├── LimitsUnavailable (503 limits_unavailable: the rate-limit store is down, redis_failure: closed)
    ├── ClientClosed (499: only in the log; the client went away before the reply was complete)
    └── UpstreamError (502: the upstream failed or answered garbage)
        ├── UpstreamUnavailable (503: no replica reachable, circuit open)
        ├── UpstreamTimeout (504)
        └── UpstreamClientError (the upstream's own 4xx, passed through with its status)

Every error response body is ``{"error": {"message", "type", "param", "code"}}``
(``ErrorResponse`` in OpenAI's spec; all four keys present, ``code`` a string or null).
A value the client sent is echoed through ``clip`` (at most ``ECHO_CHARS`` characters).
"""

from __future__ import annotations

from typing import Any

import orjson

ECHO_CHARS = 256


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """``value`` as text for an error message, cut to ``limit`` characters with an ellipsis."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class GatewayError(Exception):
    status_code: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    status_code = 408
    code = "request_timeout"


class AuthenticationFailed(GatewayError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{clip(model)}` does not exist or you do not have access to it.", param="model"
        )


class Conflict(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"  # OpenAI's "requests" type for 429s
    code = "rate_limit_exceeded"


class LimitsUnavailable(GatewayError):
    """A key's limits cannot be checked (Redis is unreachable) and the gateway fails closed."""

    status_code = 503
    code = "limits_unavailable"


class DatabaseUnavailable(GatewayError):
    """The database is unreachable (an outage): what needs it cannot be done now; retry shortly."""

    status_code = 503
    code = "database_unavailable"

    def __init__(self, message: str = "The database is unreachable right now; retry shortly.", **kw: Any) -> None:
        super().__init__(message, headers={"retry-after": "1", **(kw.pop("headers", None) or {})}, **kw)


class ClientClosed(GatewayError):
    """Recorded, never sent: the client closed the connection first (nginx's 499)."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class UpstreamError(GatewayError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_error"
    # The upstream answered with an error the request itself may have caused (an HTTP 5xx
    # other than 502-504, an error event mid-stream): see gateway.resilience.
    request_suspect = False


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamClientError(UpstreamError):
    """The upstream rejected the request (4xx): its status and message go to the client."""

    type = "invalid_request_error"

    def __init__(self, status_code: int, message: str, *, param: str | None, code: str | None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, param=param, code=code, status_code=status_code, headers=headers)
        if status_code == 429:
            self.type = "rate_limit_error"


def error_body(status: int, message: str, type_: str, param: str | None = None,
               code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
