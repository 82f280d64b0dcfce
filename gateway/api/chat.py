"""POST /v1/chat/completions: the hot path, as a raw ASGI endpoint.

The routed path itself (parse once, route, retry, fall back, relay chunk by chunk, 499 on a
client that leaves, the interaction record off the request path) is ``gateway.api.routed``,
shared with the legacy completions API; this module says what is chat's own: the checks
(``gateway.validate``), the routes that can honour the request (the newer OpenAI fields a
vLLM target cannot honour keep the request off it, or are a 400: ``gateway.target_fields``),
the provider's chat calls, the stream assembler, and shadow traffic after a 200.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from gateway.api.finish import Call
from gateway.api.routed import RoutedEndpoint
from gateway.assemble import StreamAssembler
from gateway.auth import Authenticator, Principal
from gateway.providers.base import ChunkStream, Reply
from gateway.ratelimit import Ask, Limiter
from gateway.reserve import ask_for
from gateway.router import Attempt, Router
from gateway.shadow import Shadower
from gateway.target_fields import honouring
from gateway.validate import apply_key_limits, validate_chat_request


class ChatCompletions(RoutedEndpoint):
    id_prefix = "chatcmpl-"

    def __init__(self, router_ref: Any, log: Any, max_body: int, auth: Authenticator,
                 limiter: Limiter, max_messages: int = 2048) -> None:
        super().__init__(router_ref, log, max_body, auth, limiter)
        self.max_messages = max_messages
        self.shadows = Shadower(log)

    def check(self, body: Any) -> None:
        validate_chat_request(body, self.max_messages)

    def cap(self, principal: Principal, body: dict[str, Any]) -> None:
        apply_key_limits(principal, body)

    def routes(self, router: Router, body: dict[str, Any], user: str | None) -> list[Attempt]:
        return honouring(router.plan(body["model"], user), body)

    def ask(self, principal: Principal, body: dict[str, Any], plan: list[Attempt], prices: dict[str, float]) -> Ask:
        return ask_for(principal, body, plan, prices)

    def call(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[Reply]:
        return attempt.provider.complete(body, attempt.lora_path, tenant)

    def open(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[ChunkStream]:
        return attempt.provider.stream(body, attempt.lora_path, tenant, raw=self.raw_chunks)

    def assembler(self) -> StreamAssembler:
        return StreamAssembler()

    def answered(self, router: Router, call: Call) -> None:
        self.shadows.maybe(router, call.body["model"], call.body, call.id)
