"""POST /v1/responses translated onto chat completions, on the routed path (``TranslatedResponses``).

``gateway.api.responses`` reads and checks the request, loads the stored conversation, translates the
body into a chat completion request (``gateway.responses.translate.to_chat``) and hands it to
``TranslatedResponses.serve`` when the alias's targets speak only Chat Completions. From there it is a
chat completion in every way but the reply's shape: the chat path's checks (``validate_chat_request``),
routes (``honouring``), key caps, limits, retries, fallbacks, timeouts, shadow traffic and cost
(``ChatCompletions``), metrics labelled ``api="responses"``, and the record: the chat completion, with
the chat request as its request, so ``tuneloop dataset build`` trains on it unchanged. An error before
the first byte is the chat path's, in OpenAI's envelope with its status.

The reply hooks (``gateway.api.routed_hooks``) say what differs:

- ``answer``: the chat completion becomes the Response (``translate.from_completion``), stored
  (``responses_turn.keep``) before it is sent; the record keeps the completion.
- ``frames``: each chat chunk is parsed once and goes to the Responses event stream
  (``gateway.responses.events.EventStream``), which the first batch opens with ``response.created``
  and ``response.in_progress``; its bytes are kept for the record, which the log writer assembles off the
  serving core as it does the chat relay's (``TurnChunks``, a ``gateway.raw_chunks.RawChunks``).
- ``closing``: the open items are closed and the final event (``response.completed`` or
  ``response.incomplete``) carries the stored Response.
- ``stream_error``: a stream the upstream broke ends with ``error`` and ``response.failed`` (with what
  came so far, stored too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.api.chat import ChatCompletions
from gateway.api.finish import Call
from gateway.api.responses_turn import Turn, keep
from gateway.assemble import StreamAssembler
from gateway.auth import Authenticator
from gateway.errors import GatewayError
from gateway.ratelimit import Limiter
from gateway.raw_chunks import RawChunks
from gateway.responses.events import EventStream
from gateway.responses.translate import from_completion
from gateway.shadow import Shadower


class TurnChunks(RawChunks):
    """The stream's state: each chat chunk's bytes kept for the record (assembled by the log writer, as the
    chat relay's), parsed once for the Responses events (``stream``: opened by the first batch)."""

    __slots__ = ("stream",)

    def __init__(self, make: Callable[[], StreamAssembler], our_id: str) -> None:
        super().__init__(make, our_id)
        self.stream: EventStream | None = None

    def frame(self, data: bytes, want_usage: bool) -> bytes | None:
        self.events.append(data)
        chunk = orjson.loads(data)
        if self.upstream_id is None and isinstance(chunk.get("id"), str):
            self.upstream_id = chunk["id"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        assert self.stream is not None
        return self.stream.chunk(chunk) or None


class TranslatedResponses(ChatCompletions):
    raw_chunks = True  # opened raw: each chunk's bytes kept for the record, parsed once for the events
    api = "responses"
    log_message = "response"
    logger = logging.getLogger("tuneloop.responses")

    def __init__(self, router_ref: Any, log: Any, max_body: int, auth: Authenticator, limiter: Limiter,
                 max_messages: int = 2048, shadows: Shadower | None = None) -> None:
        super().__init__(router_ref, log, max_body, auth, limiter, max_messages)
        if shadows is not None:
            self.shadows = shadows  # the chat endpoint's: one bound on shadow calls in flight

    async def answer(self, call: Call, out: dict[str, Any]) -> tuple[bytes, dict[str, Any], str | None]:
        turn: Turn = call.context
        upstream_id = out.get("id")
        out["id"] = call.id
        response = from_completion(turn.id, turn.body, turn.created_at, out)
        return orjson.dumps(keep(self.log, turn, response, call.id)), out, upstream_id

    def stream_state(self, call: Call) -> TurnChunks:
        return TurnChunks(self.assembler, call.id)

    def frames(self, call: Call, asm: Any, batch: list[Any], want_usage: bool) -> list[bytes]:
        head = self._opened(call, asm)  # the first batch opens the event stream
        out = super().frames(call, asm, batch, want_usage)  # TurnChunks.frame: each chunk's events
        return [head, *out] if head else out

    async def closing(self, call: Call, asm: Any) -> bytes:
        return self._opened(call, asm) + self._final(call, asm)

    async def stream_error(self, call: Call, asm: Any, exc: GatewayError) -> bytes:
        head = self._opened(call, asm)
        asm.stream.chunk({"error": exc.to_dict()["error"]})  # as the chat stream's in-band error
        return head + self._final(call, asm)

    @staticmethod
    def _opened(call: Call, asm: TurnChunks) -> bytes:
        """``response.created`` and ``response.in_progress`` the first time; nothing after."""
        if asm.stream is not None:
            return b""
        turn: Turn = call.context
        asm.stream = EventStream(turn.id, turn.body, turn.created_at)
        return asm.stream.start()

    def _final(self, call: Call, asm: TurnChunks) -> bytes:
        """The open items closed, then the final event with the Response (stored first)."""
        assert asm.stream is not None
        response, tail = asm.stream.finish()
        return tail + asm.stream.final(keep(self.log, call.context, response, call.id))
