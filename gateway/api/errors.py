"""Every error leaves the gateway as OpenAI's envelope: the one place that makes it so."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import DatabaseUnavailable, GatewayError, InvalidRequest, error_body
from gateway.store.db import OUTAGES, is_transient

_STATUS_TYPES = {401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 405: "invalid_request_error",
                 409: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def error_response(exc: GatewayError) -> Response:
    return Response(exc.body(), status_code=exc.status_code, media_type="application/json",
                    headers=exc.headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            msg = "We could not parse the JSON body of your request."
            param = None
        elif first.get("type") == "missing":
            msg = f"Missing required parameter: '{param}'."
        else:
            msg = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
        return error_response(InvalidRequest(msg, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        message = str(exc.detail) if exc.detail else "Error"
        if status == 404:
            message = "Not found: no such route."
        body = error_body(status, message, _STATUS_TYPES.get(status, "server_error" if status >= 500
                                                           else "invalid_request_error"))
        return Response(body, status_code=status, media_type="application/json",
                        headers=getattr(exc, "headers", None))

    @app.exception_handler(UnicodeEncodeError)
    @app.exception_handler(orjson.JSONEncodeError)
    async def _surrogates(_: Request, exc: Exception) -> Response:
        if isinstance(exc, orjson.JSONEncodeError) and "surrogates" not in str(exc):
            return await _unexpected(_, exc)
        # JSON may escape lone UTF-16 surrogates ("\udaa4"), which are not Unicode text:
        # they surface when the value is stored or encoded. The client's input, so a 400.
        return error_response(InvalidRequest(
            "The request contains invalid Unicode (a lone surrogate escape)."))

    async def _database_away(_: Request, exc: Exception) -> Response:
        """Not a bug: the database is away (an outage), so a 503 to retry. Handled here, by class, rather
        than by the catch-all below: Starlette re-raises what that one answers, and uvicorn then closes the
        connection under the client's next keep-alive request (a reset, which chaos.py counted as
        ReadErrors during a PostgreSQL outage)."""
        return error_response(DatabaseUnavailable())

    for outage in OUTAGES:
        app.add_exception_handler(outage, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:  # a bug: still an envelope
        if is_transient(exc):  # an outage by another class (an OSError): a 503 all the same
            return error_response(DatabaseUnavailable())
        return Response(error_body(500, "The server had an error while processing your request.",
                                   "server_error"), status_code=500, media_type="application/json")
