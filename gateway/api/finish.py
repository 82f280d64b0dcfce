"""The end of a routed request (``gateway.api.routed``): metrics, spend, and the interaction record.

``Finisher.finish`` runs once per request, whatever its outcome (200, an error, a client that
left): it logs 5xx (and every request with ``TUNELOOP_ACCESS_LOG=1``), observes the metrics
(labelled with the API: ``chat.completions``, ``completions`` or ``responses``), settles the key's
reservation with what the request used, and hands the record to the log, as the alias's log policy
says, with the API's ``object`` (``chat.completion`` or ``text_completion``) so readers can tell them
apart. A response passed through to a target that serves the Responses API is logged as the chat
completion it would have been (``logged_request``, and the reply its API hands in as ``out``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import EllipsisType
from typing import Any

from gateway import metrics
from gateway.auth import Principal
from gateway.cost import request_cost
from gateway.errors import GatewayError
from gateway.log.record import InteractionRecord
from gateway.ratelimit import Limiter, Reservation
from gateway.reserve import used
from gateway.router import Attempt, Router


class Call:
    """Per-request state shared by the plain and the streamed path."""

    __slots__ = ("id", "started", "created", "wall", "body", "attempt", "attempts", "ttft", "principal",
                 "reservation", "context")

    def __init__(self, call_id: str, body: dict[str, Any], principal: Principal,
                 reservation: Reservation | None, context: Any = None) -> None:
        self.id = call_id
        self.context = context  # the API's own per-request state (the Responses pass-through's turn)
        self.principal = principal
        self.started = time.perf_counter()
        self.wall = time.time()  # the record's `created`: to the µs, so `created >= since` windows (canary,
        self.created = int(self.wall)  # shadow pairs) hold requests of the second they open; the API's is whole
        self.body = body
        self.attempt: Attempt | None = None
        self.attempts = 0
        self.ttft: float | None = None
        self.reservation = reservation


class Finisher:
    api = "chat.completions"  # the metrics' ``api`` label
    object = "chat.completion"  # the record's ``object``
    log_message = "chat completion"
    logger = logging.getLogger("tuneloop.chat")

    def __init__(self, router_ref: Any, log: Any, limiter: Limiter) -> None:
        self.router_ref = router_ref  # an object whose .router is the live Router (reloadable)
        self.log = log
        self.limiter = limiter
        self.access_log = os.environ.get("TUNELOOP_ACCESS_LOG", "0") == "1"
        self._spending: set[asyncio.Task[None]] = set()

    def answered(self, router: Router, call: Call) -> None:
        """After a 200 on an alias that is still routed (chat: shadow traffic)."""

    def logged_request(self, call: Call) -> dict[str, Any]:
        """The request as the record keeps it (and its ``store`` and ``metadata``): the body as
        received, unless the API logs another shape (the Responses pass-through: a chat request)."""
        return call.body

    def settle(self, call: Call, usage: dict[str, Any] | None, cost: float | None,
               out: dict[str, Any] | None) -> None:
        """Swap the key's reservation for what the request used, once (see gateway.reserve.used)."""
        res = call.reservation
        if res is None or res.settled:
            return
        res.settled = True
        tokens, usd = used(res, usage, cost, out)
        task = asyncio.get_running_loop().create_task(self.limiter.settle(res, tokens, usd))
        self._spending.add(task)
        task.add_done_callback(self._spending.discard)

    def cost(self, call: Call, usage: dict[str, Any] | None) -> float | None:
        a = call.attempt
        if a is None:
            return None
        return request_cost(a.provider.cfg.prices or self.router_ref.router.config.default_prices, usage)

    def finish(self, call: Call, status: int, out: dict[str, Any] | None, *,
               upstream_id: str | None = None, base_url: str | None = None,
               error: GatewayError | None = None, cost: float | None | EllipsisType = ...,
               relayed: int | None = None, chunks: str | None = None) -> None:
        """Metrics, shadow, spend, and the interaction record (``cost``: if already known;
        ``relayed``: streamed deltas, the completion tokens when the upstream sent no usage;
        ``chunks``: a relayed stream's chunks, which the log writer assembles into the reply, ``out``
        then holding only the usage)."""
        latency = time.perf_counter() - call.started
        a = call.attempt
        if status >= 500 or self.access_log:
            self.logger.log(logging.WARNING if status >= 500 else logging.INFO, self.log_message,
                            extra={"request_id": call.id, "model": call.body.get("model"),
                                   "target": a.target if a else None, "status": status,
                                   "latency_ms": round(latency * 1000, 2), "attempts": call.attempts,
                                   "project": call.principal.project,
                                   "error": error.message if error else None})
        alias = a.alias if a else call.body.get("model", "")
        usage = out.get("usage") if out else None
        if cost is ...:
            cost = self.cost(call, usage)
        metrics.observe(alias, a.target if a else None, a.arm if a else None, status,
                        bool(call.body.get("stream")), latency, call.ttft, usage, cost, call.principal.project,
                        self.api)
        router: Router = self.router_ref.router
        if status == 200 and a is not None and call.body["model"] in router:
            self.answered(router, call)
        self.settle(call, usage, cost, out)
        requested = router.aliases.get(call.body["model"])  # None if a reload removed it meanwhile
        policy = requested.cfg.log if requested else "all"
        request = self.logged_request(call)
        if policy == "none" or (policy == "store" and request.get("store") is not True):
            return
        choices = out.get("choices") if out else None
        self.log.submit(InteractionRecord(
            id=call.id, created=call.wall, requested_model=call.body.get("model", ""),
            project=call.principal.project, api_key_id=call.principal.key_id,
            target=a.target if a else None, upstream_model=a.model if a else None,
            upstream_base_url=base_url, upstream_id=upstream_id, arm=a.arm if a else None,
            attempts=call.attempts, stream=bool(call.body.get("stream")),
            store=request.get("store") is True, request=request,
            response=out if status in (200, 499) and chunks is None else None, chunks=chunks,
            finish_reason=choices[0].get("finish_reason") if choices else None,
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=usage.get("completion_tokens") if usage else relayed,
            cached_tokens=((usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                           if usage else None),
            total_tokens=usage.get("total_tokens") if usage else None,
            ttft_s=call.ttft, latency_s=latency, cost_usd=cost, status=status,
            error=error.to_dict()["error"] if error else None,
            metadata=request.get("metadata"), redact_pii=bool(requested and requested.cfg.redact_pii),
            object=self.object))
