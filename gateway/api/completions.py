"""POST /v1/completions: OpenAI's legacy completions API, as a raw ASGI endpoint on the routed path.

Everything chat completions get, this gets the same way (``gateway.api.routed``): the caller's key
and project, aliases with weighted canaries and fallbacks, retries with backoff within the retry
budget, TTFT and total timeouts, circuit breakers, rate limits and budgets (the prompt estimated
from ``prompt``, ``max_tokens`` × ``max(n, best_of)`` per prompt: ``gateway.reserve``), metrics
(``api="completions"``), cost, and one interaction record per request with ``object`` =
``text_completion`` (a stream assembled at its end: ``gateway.text_completion.TextAssembler``).
Its id (``cmpl-...``) takes feedback like a chat completion's; the stored chat completions API
does not list it, and ``tuneloop dataset build --format prompt_completion`` exports it.

What is the API's own is ``gateway.text_completion`` (its checks and which routes can honour
``logprobs``); the providers' ``text_complete``/``text_stream`` reach the targets' ``/v1/completions``
(vLLM and the engine by adapter name, OpenAI through the SDK for ``ft:davinci-002``-style models).
Shadow traffic is chat's only: an alias's ``shadow`` is not mirrored for text completions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from gateway.api.routed import RoutedEndpoint
from gateway.auth import Principal
from gateway.providers.base import ChunkStream, Reply
from gateway.ratelimit import Ask
from gateway.reserve import ask_for, text_generations
from gateway.router import Attempt, Router
from gateway.text_completion import TextAssembler, text_routes, validate_completion_request
from gateway.validate import apply_key_limits


class TextCompletions(RoutedEndpoint):
    id_prefix = "cmpl-"
    api = "completions"
    object = "text_completion"
    log_message = "text completion"
    logger = logging.getLogger("tuneloop.completions")

    def check(self, body: Any) -> None:
        validate_completion_request(body)

    def cap(self, principal: Principal, body: dict[str, Any]) -> None:
        apply_key_limits(principal, body, text_generations(body))

    def routes(self, router: Router, body: dict[str, Any], user: str | None) -> list[Attempt]:
        return text_routes(router.plan(body["model"], user), body)

    def ask(self, principal: Principal, body: dict[str, Any], plan: list[Attempt], prices: dict[str, float]) -> Ask:
        return ask_for(principal, body, plan, prices, text=True)

    def call(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[Reply]:
        return attempt.provider.text_complete(body, attempt.lora_path, tenant)

    def open(self, attempt: Attempt, body: dict[str, Any], tenant: str | None) -> Awaitable[ChunkStream]:
        return attempt.provider.text_stream(body, attempt.lora_path, tenant, raw=True)

    def assembler(self) -> TextAssembler:
        return TextAssembler()
