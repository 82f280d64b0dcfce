"""POST /v1/responses (OpenAI's Responses API), as a raw ASGI endpoint: passed through or translated.

The request is read and checked here (``check_body``, the input items), the stored conversation of
``previous_response_id`` loaded (same project only: another project's id is a 404), and then:

- **Passed through** when every target the alias may reach (its routes, canary arms and fallbacks)
  serves the Responses API itself (a target's ``responses_api``: true by default for ``openai``,
  false for ``vllm``): ``gateway.api.responses_native`` sends the request as sent, with
  ``store: false`` and the whole conversation as ``input`` (the gateway holds the history; the
  upstream would not know its ids), and relays the Response or its events with the gateway's id.
- **Translated** otherwise (one request never mixes the two, whichever route serves it): the body
  becomes a chat completion request (``gateway.responses.translate``) run through ``ChatCompletions``
  in-process, with the caller's headers (authorization, x-tuneloop-user...), a ``receive`` that
  replays the translated body and a ``send`` that captures the reply; errors from the chat path (its
  envelope and status) pass through as they are. A stream's chat chunks become Responses events as
  they arrive (``gateway.responses.events``).

Either way routing (aliases, canaries, fallbacks), auth, limits, metrics, cost and the interaction log
apply as for chat, and the logged interaction is an ordinary chat completion (so
``tuneloop dataset build`` trains on it) whose id, the ``x-request-id`` header, links the response to
it. With ``store`` (true unless false, as OpenAI's) the Response and its input items are kept in
``gateway.store.responses`` (written in a thread before the reply's last bytes, so a retrieve right
after sees it); if that write fails the reply says ``store: false``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.api.chat import ChatCompletions
from gateway.api.responses_native import NativeResponses, serves_natively
from gateway.api.responses_turn import Turn, history, keep
from gateway.api.routed import SSE_HEADERS
from gateway.asgi import Receive, Scope, Send, header, parse_json, read_body, send_error, send_json
from gateway.auth import ANONYMOUS, Authenticator
from gateway.errors import GatewayError
from gateway.responses import passthrough
from gateway.responses.events import EventStream
from gateway.responses.items import input_items, to_messages
from gateway.responses.objects import bad, check_body, new_id
from gateway.responses.translate import from_completion, to_chat
from gateway.sse import SSEParser

CHAT_PATH = "/v1/chat/completions"
OWN_HEADERS = (b"content-type", b"content-length", b"cache-control", b"x-accel-buffering")


class ResponsesEndpoint:
    def __init__(self, chat: ChatCompletions, native: NativeResponses, state: Any, auth: Authenticator,
                 max_body: int) -> None:
        self.chat = chat
        self.native = native
        self.state = state  # the app's state: .log (the LogService, opened by the lifespan)
        self.auth = auth
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = (await self.auth.principal(header(scope, b"authorization"))
                         if self.auth.required else ANONYMOUS)
            body = check_body(parse_json(await read_body(scope, receive, self.max_body)))
            native = serves_natively(self.chat.router_ref.router, body["model"])
            items = input_items(body.get("input"), passthrough=native)
            earlier = await history(self.state.log.engine, body.get("previous_response_id"), principal)
            messages = to_messages(earlier + items)
            if not messages:
                raise bad("Invalid 'input': empty array. Expected at least one item.", "input", "empty_array")
            if native:
                passthrough.check(body)
                upstream = passthrough.upstream_body(body, earlier)
            else:
                chat_body = to_chat(body, messages)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        turn = Turn(new_id("resp"), body, int(time.time()), items, principal, messages)
        if native:
            await self.native.serve(scope, receive, send, principal, upstream, turn)
            return
        payload = orjson.dumps(chat_body)
        sub_scope = {**scope, "path": CHAT_PATH, "raw_path": CHAT_PATH.encode(),
                     "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                     + [(b"content-length", b"%d" % len(payload))]}
        if chat_body.get("stream"):
            relay = StreamRelay(self, turn, send)
            await self.chat(sub_scope, replay(payload, receive), relay.send)
        else:
            await self._complete(turn, sub_scope, replay(payload, receive), send)

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
        return await keep(self.state.log.engine, turn, response, completion_id)


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
