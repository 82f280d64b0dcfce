"""POST /v1/responses passed through to targets that serve the Responses API, on the routed path.

``gateway.api.responses`` reads and checks the request, loads the stored conversation, and hands the
body for the upstream (``gateway.responses.passthrough.upstream_body``: ``store: false``, the whole
conversation as ``input``) to ``NativeResponses.serve`` when every target the alias may reach serves
the Responses API (``serves_natively``: the routes, canary arms and fallbacks all have
``responses_api``; any other alias is translated onto chat completions whole, so one request never
mixes the two). Everything the routed path does for chat applies the same way
(``gateway.api.routed``): the caller's key, aliases with canaries and fallbacks, retries within the
retry budget, TTFT and total timeouts, breakers, rate limits and budgets (the prompt estimated from
``instructions``, ``input`` and ``tools``, the completion from ``max_output_tokens``:
``gateway.reserve``), metrics (``api="responses"``) and cost (from the Response's ``usage``).

The reply keeps the upstream's shape with the gateway's id and storage (``passthrough.shown``):
the Response, or the stream's events relayed as they come (``event:`` and ``data:`` lines, nothing
added: no ``[DONE]``, no usage asked for, the final event held back until the Response is handed
to the log to be stored: ``responses_turn.keep``).
A stream the upstream breaks ends with an ``error`` event and ``response.failed``. The record is the
chat completion it would have been (``translate.to_chat`` on the request, ``translate.to_completion``
on the Response), with ``x-request-id`` as its id and the stored response's ``completion_id``, as on
the translated path: feedback, stored completions and ``tuneloop dataset build`` read it unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import orjson

from gateway.api.finish import Call
from gateway.api.responses_turn import Turn, keep
from gateway.api.routed import RoutedEndpoint
from gateway.auth import Principal
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.providers.base import ChunkStream, Reply
from gateway.providers.sse import TERMINAL
from gateway.ratelimit import Ask
from gateway.reserve import RESPONSES_MAX, ask_for
from gateway.responses.passthrough import ResponseAssembler, frame, shown
from gateway.responses.translate import to_chat, to_completion
from gateway.router import Attempt, Router
from gateway.validate import apply_key_limits


def serves_natively(router: Router, model: str) -> bool:
    """Whether every target a plan for ``model`` may reach serves the Responses API itself."""
    targets = router.targets_of(model)
    return bool(targets) and all(router.providers[t].cfg.responses_api for t in targets)


class NativeResponses(RoutedEndpoint):
    raw_chunks = False  # typed events, not chunks
    id_prefix = "chatcmpl-"  # the record's id (a chat completion's); the Response has the turn's resp_ id
    api = "responses"
    object = "chat.completion"
    log_message = "response"
    logger = logging.getLogger("tuneloop.responses")

    def check(self, body: Any) -> None:
        """Checked before: ``gateway.api.responses`` (``check_body``, ``passthrough.check``)."""

    def cap(self, principal: Principal, body: dict[str, Any]) -> None:
        apply_key_limits(principal, body, fields=RESPONSES_MAX)

    def routes(self, router: Router, body: dict[str, Any], user: str | None) -> list[Attempt]:
        plan = [a for a in router.plan(body["model"], user) if a.provider.cfg.responses_api]
        if not plan:  # the config changed since the request was read
            raise UpstreamUnavailable(f"No route of '{body['model']}' serves the Responses API now; try again.")
        return plan

    def ask(self, principal: Principal, body: dict[str, Any], plan: list[Attempt], prices: dict[str, float]) -> Ask:
        return ask_for(principal, body, plan, prices, responses=True)

    def call(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[Reply]:
        return attempt.provider.responses_create(body, attempt.lora_path, tenant)

    def open(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[ChunkStream]:
        return attempt.provider.responses_stream(body, attempt.lora_path, tenant)

    def assembler(self) -> ResponseAssembler:
        return ResponseAssembler()

    def logged_request(self, call: Call) -> dict[str, Any]:
        turn: Turn = call.context
        body = {**turn.body, "max_output_tokens": call.body.get("max_output_tokens")}  # with a key's cap
        return to_chat(body, turn.messages, strict=False)

    async def answer(self, call: Call, out: dict[str, Any]) -> tuple[bytes, dict[str, Any], str | None]:
        turn: Turn = call.context
        response = keep(self.log, turn, shown(out, turn.id, turn.body), call.id)
        return orjson.dumps(response), to_completion(response, call.id, call.created), out.get("id")

    def stream_body(self, call: Call, attempt: Attempt) -> dict[str, Any]:
        return self._upstream_body(call, attempt)  # a Response's stream ends with its usage unasked

    def frames(self, call: Call, asm: Any, batch: list[dict[str, Any]], want_usage: bool) -> list[bytes]:
        turn: Turn = call.context
        out = []
        for event in batch:
            asm.add(event)
            if isinstance(event.get("response"), dict):
                event["response"] = shown(event["response"], turn.id, turn.body)
            if event.get("type") in TERMINAL:
                asm.held = event  # sent by closing(), once the response is stored
            else:
                out.append(frame(event))
        return out

    async def closing(self, call: Call, asm: Any) -> bytes:
        event, asm.held = asm.held, None
        if event is None:
            return b""
        event["response"] = keep(self.log, call.context, event["response"], call.id)
        return frame(event)

    async def stream_error(self, call: Call, asm: Any, exc: GatewayError) -> bytes:
        """``error``, then ``response.failed`` with what came so far (stored, as the translated path does)."""
        seq = asm.seq + 1
        error = frame({"type": "error", "code": exc.code, "message": exc.message, "param": None,
                       "sequence_number": seq})
        if asm.response is None:
            return error
        turn: Turn = call.context
        failed = {**shown(asm.final(), turn.id, turn.body), "status": "failed",
                  "error": {"code": "server_error", "message": exc.message}}
        failed = keep(self.log, turn, failed, call.id)
        return error + frame({"type": "response.failed", "response": failed, "sequence_number": seq + 1})
