"""POST /v1/responses (OpenAI's Responses API), served by the chat path, as a raw ASGI endpoint.

The request is translated to a chat completion request (``gateway.responses.translate``) and run
through ``ChatCompletions`` in-process, with the caller's headers (authorization,
x-tuneloop-user...), a ``receive`` that replays the translated body and a ``send`` that captures
the reply: routing (aliases, canaries, fallbacks), auth, limits, metrics, cost and the interaction
log apply unchanged, and the logged interaction is an ordinary chat completion (so
``tuneloop dataset build`` trains on it). Its id, the ``x-request-id`` header, links the response to
it. Errors from the chat path (its envelope and status) pass through as they are. A stream's chat
chunks become Responses events as they arrive (``gateway.responses.events``).

With ``store`` (true unless false, as OpenAI's) the Response and its input items are kept in
``gateway.store.responses`` (written in a thread before the reply's last bytes, so a retrieve right
after sees it); if that write fails the reply says ``store: false``. ``previous_response_id``
prepends the stored conversation (same project only: another project's id is a 404). Every target
is reached through translation; passing requests through to upstreams that speak the Responses API
themselves is left for later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.api.chat import ChatCompletions
from gateway.api.routed import SSE_HEADERS
from gateway.asgi import Receive, Scope, Send, header, parse_json, read_body, send_error, send_json
from gateway.auth import ANONYMOUS, Authenticator, Principal, project_of
from gateway.errors import GatewayError
from gateway.responses.events import EventStream
from gateway.responses.items import input_items, to_messages
from gateway.responses.translate import bad, check_body, from_completion, new_id, to_chat
from gateway.sse import SSEParser
from gateway.store.responses import ResponseStore

logger = logging.getLogger("tuneloop.responses")
CHAT_PATH = "/v1/chat/completions"
OWN_HEADERS = (b"content-type", b"content-length", b"cache-control", b"x-accel-buffering")


@dataclass
class Turn:
    """One POST /v1/responses: its id, the request, its own input items, who asked."""

    id: str
    body: dict[str, Any]
    created_at: int
    items: list[dict[str, Any]]
    principal: Principal


class ResponsesEndpoint:
    def __init__(self, chat: ChatCompletions, state: Any, auth: Authenticator, max_body: int) -> None:
        self.chat = chat
        self.state = state  # the app's state: .log (the LogService, opened by the lifespan)
        self.auth = auth
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = (await self.auth.principal(header(scope, b"authorization"))
                         if self.auth.required else ANONYMOUS)
            body = check_body(parse_json(await read_body(scope, receive, self.max_body)))
            items = input_items(body.get("input"))
            history = await self._history(body.get("previous_response_id"), principal)
            messages = to_messages(history + items)
            if not messages:
                raise bad("Invalid 'input': empty array. Expected at least one item.", "input", "empty_array")
            chat_body = to_chat(body, messages)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        turn = Turn(new_id("resp"), body, int(time.time()), items, principal)
        payload = orjson.dumps(chat_body)
        sub_scope = {**scope, "path": CHAT_PATH, "raw_path": CHAT_PATH.encode(),
                     "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                     + [(b"content-length", b"%d" % len(payload))]}
        if chat_body.get("stream"):
            relay = StreamRelay(self, turn, send)
            await self.chat(sub_scope, replay(payload, receive), relay.send)
        else:
            await self._complete(turn, sub_scope, replay(payload, receive), send)

    async def _history(self, previous: str | None, principal: Principal) -> list[dict[str, Any]]:
        if previous is None:
            return []
        store = ResponseStore(self.state.log.engine)
        try:
            return await asyncio.to_thread(store.context, previous, project_of(principal))
        except GatewayError:
            raise
        except Exception as exc:
            logger.exception("reading the conversation of %s failed", previous)
            raise GatewayError("The stored conversation could not be read; try again.", status_code=503) from exc

    async def _complete(self, turn: Turn, scope: Scope, receive: Receive, send: Send) -> None:
        reply = Capture()
        await self.chat(scope, receive, reply.send)
        if reply.status is None:  # the client went away (recorded as 499 by the chat path)
            return
        if reply.status != 200:
            await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
            await send({"type": "http.response.body", "body": b"".join(reply.body)})
            return
        completion = orjson.loads(b"".join(reply.body))
        response = from_completion(turn.id, turn.body, turn.created_at, completion)
        response = await self.save(turn, response, completion.get("id"))
        await send_json(send, 200, orjson.dumps(response), passed_headers(reply.headers))

    async def save(self, turn: Turn, response: dict[str, Any], completion_id: str | None) -> dict[str, Any]:
        """Keep the response (unless ``store: false``); the response as the client gets it."""
        if turn.body.get("store") is False:
            return response
        row = {"id": turn.id, "created_at": time.time(), "project": turn.principal.project,
               "completion_id": completion_id, "previous_response_id": turn.body.get("previous_response_id"),
               "response": response, "input_items": turn.items}
        try:
            await asyncio.to_thread(ResponseStore(self.state.log.engine).save, row)
        except Exception:
            logger.exception("storing response %s failed; it is returned with store: false", turn.id)
            return {**response, "store": False}
        return response


def replay(payload: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the chat path ``payload`` as the body, then the client's own
    messages (so the chat path still notices a client that goes away)."""
    sent = False

    async def receive_body() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        return dict(await receive())

    return receive_body


def passed_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The chat path's headers the client gets too (x-request-id, rate limits, target, cost...)."""
    return [(k, v) for k, v in headers if k.lower() not in OWN_HEADERS]


class Capture:
    """A ``send`` that keeps a whole (non-streamed) reply."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers") or [])
        else:
            self.body.append(message.get("body", b""))


class StreamRelay:
    """A ``send`` that turns the chat path's SSE chunks into Responses events as they come; a reply
    that is not a 200 stream (an error before the first byte) passes through untouched."""

    def __init__(self, endpoint: ResponsesEndpoint, turn: Turn, send: Send) -> None:
        self.endpoint, self.turn, self.client = endpoint, turn, send
        self.events = EventStream(turn.id, turn.body, turn.created_at)
        self.parser = SSEParser()
        self.passthrough = False
        self.completion_id: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
        elif self.passthrough:
            await self.client(message)
        else:
            events = b"".join(self.events.chunk(orjson.loads(data))
                              for data in self.parser.feed(message.get("body", b"")))
            if message.get("more_body"):
                if events:
                    await self.client({"type": "http.response.body", "body": events, "more_body": True})
            else:
                await self._end(events)

    async def _start(self, message: dict[str, Any]) -> None:
        headers = list(message.get("headers") or [])
        if message["status"] != 200:
            self.passthrough = True
            await self.client(message)
            return
        self.completion_id = next((v.decode() for k, v in headers if k == b"x-request-id"), None)
        await self.client({"type": "http.response.start", "status": 200,
                           "headers": SSE_HEADERS + passed_headers(headers)})
        await self.client({"type": "http.response.body", "body": self.events.start(), "more_body": True})

    async def _end(self, events: bytes) -> None:
        response, tail = self.events.finish()
        response = await self.endpoint.save(self.turn, response, self.completion_id)
        await self.client({"type": "http.response.body", "body": events + tail + self.events.final(response),
                           "more_body": False})
