"""The hooks an API fills in on the routed path (``gateway.api.routed``), and how a reply is relayed.

The first group says what the API is: how a body is checked, capped, routed and priced, which
provider call serves it, how a stream is assembled for the record. The second says how the reply
reaches the client; its defaults are the chunk APIs' (chat and legacy completions: our id in the
body and in every chunk, usage always asked of the upstream and shown only to a client that asked,
``data: [DONE]`` at the end, an error envelope as the last event of a broken stream; the chunks
relayed as bytes, ``gateway.raw_chunks``). The Responses
API relays typed events instead: the upstream's (``gateway.api.responses_native``), or its own made
from the chat chunks (``gateway.api.responses_translated``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson

from gateway.api.finish import Call, Finisher
from gateway.auth import Principal
from gateway.errors import GatewayError
from gateway.providers.base import ChunkStream, Reply
from gateway.ratelimit import Ask
from gateway.raw_chunks import RawChunks
from gateway.router import Attempt, Router

DONE = b"data: [DONE]\n\n"


class RoutedHooks(Finisher):
    """What ``RoutedEndpoint`` asks of an API: the first group always, the second where it differs."""

    raw_chunks = True  # streams opened raw and relayed as bytes (``gateway.raw_chunks``)

    # ---- what an API says ----
    def check(self, body: Any) -> None:
        """400 unless ``body`` is a request of this API."""
        raise NotImplementedError

    def cap(self, principal: Principal, body: dict[str, Any]) -> None:
        """Apply the key's per-request caps (``max_tokens``)."""
        raise NotImplementedError

    def routes(self, router: Router, body: dict[str, Any], user: str | None) -> list[Attempt]:
        """The attempts, in order, that may serve ``body`` (400 when none can)."""
        raise NotImplementedError

    def ask(self, principal: Principal, body: dict[str, Any], plan: list[Attempt], prices: dict[str, float]) -> Ask:
        """The worst case of the request, reserved against the key's limits (``prices``: the config's
        default prices)."""
        raise NotImplementedError

    def call(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[Reply]:
        raise NotImplementedError

    def open(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[ChunkStream]:
        raise NotImplementedError

    def assembler(self) -> Any:
        """A fresh stream assembler: ``add(chunk)``, ``deltas``, ``upstream_id``, ``completion(id, created)``."""
        raise NotImplementedError

    def stream_state(self, call: Call) -> Any:
        """What a stream's ``frames`` work on: the byte relay's ``RawChunks``, or a fresh assembler."""
        return RawChunks(self.assembler, call.id) if self.raw_chunks else self.assembler()

    # ---- how the reply is relayed: chunk APIs' defaults (the Responses API's pass-through differs) ----
    async def answer(self, call: Call, out: dict[str, Any]) -> tuple[bytes, dict[str, Any], str | None]:
        """A 200 reply as (the client's body, the record's reply, the upstream's id): ours in its place."""
        upstream_id = out.get("id")
        out["id"] = call.id
        return orjson.dumps(out), out, upstream_id

    def stream_body(self, call: Call, attempt: Attempt) -> dict[str, Any]:
        """The upstream's body for a stream: usage is always asked for (the record and cost need it)."""
        up = self._upstream_body(call, attempt)
        up["stream_options"] = {**(call.body.get("stream_options") or {}), "include_usage": True}
        return up

    def frames(self, call: Call, asm: Any, batch: list[Any], want_usage: bool) -> list[bytes]:
        """A batch of chunks (their bytes) as the client's SSE events (our id in each; usage only if
        it asked): ``asm`` is the stream's ``RawChunks``."""
        out = []
        for data in batch:
            frame = asm.frame(data, want_usage)
            if frame is not None:
                out.append(frame)
        return out

    async def closing(self, call: Call, asm: Any) -> bytes:
        """The stream's last bytes once the upstream's ended."""
        return DONE

    async def stream_error(self, call: Call, asm: Any, exc: GatewayError) -> bytes:
        """The in-band error that ends a stream the upstream broke."""
        return b"data: " + exc.body() + b"\n\n"

    def _upstream_body(self, call: Call, attempt: Attempt) -> dict[str, Any]:
        up = dict(call.body)
        up["model"] = attempt.model
        return up
