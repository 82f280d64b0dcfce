"""Small raw-ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from gateway.errors import BodyTooLarge, GatewayError, InvalidRequest
from gateway.validate import check_storable

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]  # as Starlette's
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def text_header(scope: Scope, name: bytes) -> str | None:
    """A header as text (None when absent or empty); bytes that are not UTF-8 are a 400 naming it."""
    raw = header(scope, name)
    try:
        return raw.decode() or None if raw else None
    except UnicodeDecodeError:
        raise InvalidRequest(f"The {name.decode()} header must be UTF-8 text.", param=name.decode()) from None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


def parse_json(raw: bytes) -> Any:
    """The body, parsed; only what can also be forwarded and logged (validate.check_storable)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)") from exc
    check_storable(raw, body)
    return body


async def send_json(send: Send, status: int, payload: bytes,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
    # a content-length spares the client (and uvicorn) chunked framing
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(payload)), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, exc: GatewayError, request_id: str | None = None) -> None:
    extra = [(k.lower().encode(), str(v).encode()) for k, v in exc.headers.items()]
    if request_id:
        extra.append((b"x-request-id", request_id.encode()))
    await send_json(send, exc.status_code, exc.body(), extra)
