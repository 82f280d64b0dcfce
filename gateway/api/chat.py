"""POST /v1/chat/completions: the hot path, as a raw ASGI endpoint.

It parses the body once (orjson), checks what routing and logging need, forwards the
request to the chosen route and relays the reply. Streams are relayed chunk by chunk;
a failed attempt moves on to the next route (fallback) only while nothing has reached
the client. The interaction record is handed to the log without waiting.

A client that goes away mid-request (``DisconnectWatch``) cancels the upstream call at
once and is recorded as 499, with the text relayed so far. The caller's project goes to
the provider as ``tenant`` (vLLM's ``x-tuneloop-tenant``; the breakers' notion of who).
The newer OpenAI fields a vLLM target cannot honour keep the request off it (or are a 400):
``gateway.target_fields``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from types import EllipsisType
from typing import Any, TypeVar

import orjson

from gateway import metrics
from gateway.api.disconnect import DisconnectWatch, client_closed
from gateway.asgi import Receive, Scope, Send, header, parse_json, read_body, send_error, send_json, text_header
from gateway.assemble import StreamAssembler
from gateway.auth import ANONYMOUS, Authenticator, Principal
from gateway.cost import request_cost
from gateway.errors import GatewayError, UpstreamClientError, UpstreamError, UpstreamTimeout
from gateway.log.record import InteractionRecord
from gateway.providers.base import Reply
from gateway.ratelimit import Limiter, Reservation
from gateway.reserve import ask_for, used
from gateway.resilience import backoff_s
from gateway.router import Attempt, Router
from gateway.shadow import Shadower
from gateway.target_fields import honouring
from gateway.validate import apply_key_limits, validate_chat_request

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
               (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
DONE = b"data: [DONE]\n\n"
T = TypeVar("T")
logger = logging.getLogger("tuneloop.chat")


# 96 random bits per id from a generator seeded by the OS once per process: unique in
# practice, and without os.urandom's system call on every request (~9% of the hot path).
_ids = random.Random(os.urandom(32))


def new_completion_id() -> str:
    return f"chatcmpl-{_ids.getrandbits(96):024x}"


def retryable(exc: GatewayError) -> bool:
    """Connect errors, timeouts, 5xx and 429 move on to the next route; other 4xx do not."""
    if isinstance(exc, UpstreamClientError):
        return exc.status_code in (408, 429)
    return isinstance(exc, UpstreamError)


class _Call:
    """Per-request state shared by the plain and the streamed path."""

    __slots__ = ("id", "started", "created", "body", "attempt", "attempts", "ttft", "principal",
                 "limit_headers", "reservation")

    def __init__(self, body: dict[str, Any], principal: Principal, limit_headers: Any) -> None:
        self.principal = principal
        self.limit_headers = limit_headers
        self.id = new_completion_id()
        self.started = time.perf_counter()
        self.created = int(time.time())
        self.body = body
        self.attempt: Attempt | None = None
        self.attempts = 0
        self.ttft: float | None = None
        self.reservation: Reservation | None = None


class ChatCompletions:
    def __init__(self, router_ref: Any, log: Any, max_body: int, auth: Authenticator,
                 limiter: Limiter, max_messages: int = 2048) -> None:
        self.router_ref = router_ref  # an object whose .router is the live Router (reloadable)
        self.log = log
        self.max_body = max_body
        self.auth = auth
        self.limiter = limiter
        self.max_messages = max_messages
        self.shadows = Shadower(log)
        self.access_log = os.environ.get("TUNELOOP_ACCESS_LOG", "0") == "1"
        self._spending: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router: Router = self.router_ref.router
        try:
            principal = (await self.auth.principal(header(scope, b"authorization"))
                         if self.auth.required else ANONYMOUS)
            body = parse_json(await read_body(scope, receive, self.max_body))
            validate_chat_request(body, self.max_messages)
            if principal.limits:
                apply_key_limits(principal, body)
            user = body.get("user") or text_header(scope, b"x-tuneloop-user")
            plan = honouring(router.plan(body["model"], user), body)
            reservation = (await self.limiter.admit(principal, ask_for(
                principal, body, plan, router.config.default_prices)) if principal.limits else None)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        call = _Call(body, principal, reservation.headers if reservation else None)
        call.reservation = reservation
        watch = DisconnectWatch(receive)
        try:
            if body.get("stream"):
                await self._stream(call, plan, watch, send)
            else:
                await self._complete(call, plan, watch, send)
        finally:
            watch.stop()
            self._settle(call, None, None, None)  # released if the request ended without _finish

    def _upstream_body(self, call: _Call, attempt: Attempt) -> dict[str, Any]:
        up = dict(call.body)
        up["model"] = attempt.model
        return up

    async def _try_routes(self, call: _Call, plan: list[Attempt],
                          op: Callable[[Attempt], Awaitable[T]]) -> T:
        """Each route in turn (fallbacks), each retried with backoff, within the time budget."""
        deadline = call.started + plan[0].retry_budget_s
        error: GatewayError | None = None
        for attempt in plan:
            for tryno in range(attempt.retries + 1):
                call.attempt, call.attempts = attempt, call.attempts + 1
                try:
                    return await op(attempt)
                except GatewayError as exc:
                    error = exc
                    if not retryable(exc):
                        raise
                    delay = backoff_s(tryno, exc.headers.get("retry-after"))
                    if tryno == attempt.retries or time.perf_counter() + delay > deadline:
                        break
                    metrics.RETRIES.labels(attempt.alias, attempt.target).inc()
                    await asyncio.sleep(delay)
            if attempt is not plan[-1]:
                metrics.FALLBACKS.labels(attempt.alias, attempt.target).inc()
            if time.perf_counter() > deadline:
                break
        assert error is not None
        raise error

    async def _complete(self, call: _Call, plan: list[Attempt], watch: DisconnectWatch, send: Send) -> None:
        async def op(attempt: Attempt) -> Reply:
            return await attempt.provider.complete(self._upstream_body(call, attempt), attempt.lora_path,
                                                   call.principal.project)

        try:
            reply = await self._try_routes(call, plan, op)
        except GatewayError as exc:
            watch.stop()
            await send_error(send, exc, call.id)
            self._finish(call, exc.status_code, None, error=exc)
            return
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            self._finish(call, 499, None, error=client_closed())
            return
        watch.stop()
        out = reply.body
        upstream_id = out.get("id")
        out["id"] = call.id
        payload = orjson.dumps(out)
        headers = self._headers(call)
        cost = self._cost(call, out.get("usage"))
        if cost is not None:
            headers.append((b"x-tuneloop-cost-usd", f"{cost:.8f}".encode()))
        await send_json(send, 200, payload, headers)
        self._finish(call, 200, out, upstream_id=upstream_id, base_url=reply.base_url, cost=cost)

    def _headers(self, call: _Call) -> list[tuple[bytes, bytes]]:
        a = call.attempt
        headers = [(b"x-request-id", call.id.encode())]
        if call.limit_headers:
            headers += call.limit_headers
        if a is not None:
            headers.append((b"x-tuneloop-target", a.target.encode()))
            if a.arm:
                headers.append((b"x-tuneloop-arm", a.arm.encode()))
        return headers

    async def _open_stream(self, call: _Call, plan: list[Attempt]) -> tuple[Any, Any, list | None]:
        """Open the first route that yields a first chunk; failures here may retry or fall back."""

        async def op(attempt: Attempt) -> tuple[Any, Any, list | None]:
            up = self._upstream_body(call, attempt)
            up["stream_options"] = {**(call.body.get("stream_options") or {}), "include_usage": True}
            cfg = attempt.provider.cfg
            limit = cfg.ttft_timeout_s or cfg.timeout_s
            deadline = time.perf_counter() + limit
            try:
                stream = await asyncio.wait_for(
                    attempt.provider.stream(up, attempt.lora_path, call.principal.project), limit)
            except TimeoutError as exc:
                raise UpstreamTimeout(f"target {attempt.target!r}: no first token within {limit} s") from exc
            chunks = stream.__aiter__()
            try:
                first = await asyncio.wait_for(anext(chunks, None), max(deadline - time.perf_counter(), 0.001))
            except TimeoutError as exc:
                await stream.aclose()
                raise UpstreamTimeout(f"target {attempt.target!r}: no first token within {limit} s") from exc
            except GatewayError:
                await stream.aclose()
                raise
            return stream, chunks, first

        return await self._try_routes(call, plan, op)

    async def _stream(self, call: _Call, plan: list[Attempt], watch: DisconnectWatch, send: Send) -> None:
        try:
            stream, chunks, first = await self._open_stream(call, plan)
        except GatewayError as exc:
            watch.stop()
            await send_error(send, exc, call.id)
            self._finish(call, exc.status_code, None, error=exc)
            return
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            self._finish(call, 499, None, error=client_closed())
            return
        if watch.absorb():  # Python 3.11's wait_for returns a result that raced our cancellation
            await stream.aclose()
            self._finish(call, 499, None, error=client_closed())
            return
        want_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        asm = StreamAssembler()
        status, error = 200, None
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": SSE_HEADERS + self._headers(call)})
            batch, ended = first, False
            while batch is not None:
                out = []
                for chunk in batch:
                    asm.add(chunk)
                    if "usage" in chunk and not want_usage:
                        if not chunk.get("choices"):
                            continue  # the usage chunk was asked for by us, not by the client
                        del chunk["usage"]
                    chunk["id"] = call.id
                    out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                ended = stream.done  # [DONE] came in this read: finish in the same write
                if ended:
                    out.append(DONE)
                    watch.stop()  # before the last write (after it receive() says "disconnect")
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": not ended})
                    if call.ttft is None:
                        call.ttft = time.perf_counter() - call.started
                batch = await anext(chunks, None)
            if not ended:
                watch.stop()
                await send({"type": "http.response.body", "body": DONE, "more_body": False})
        except GatewayError as exc:  # the upstream broke mid-stream: tell the client in-band
            watch.stop()
            status, error = exc.status_code, exc
            await self._send_stream_error(send, exc)
        except (OSError, asyncio.CancelledError) as exc:  # the client went away: the upstream closes
            if isinstance(exc, asyncio.CancelledError) and not watch.absorb():
                raise
            status, error = 499, client_closed(asm.deltas)
        finally:
            await stream.aclose()
        completion = asm.completion(call.id, call.created)
        self._finish(call, status, completion, upstream_id=asm.upstream_id, base_url=stream.base_url,
                     error=error, relayed=asm.deltas)

    @staticmethod
    async def _send_stream_error(send: Send, exc: GatewayError) -> None:
        try:
            await send({"type": "http.response.body", "body": b"data: " + exc.body() + b"\n\n",
                        "more_body": False})
        except OSError:
            pass

    def _settle(self, call: _Call, usage: dict[str, Any] | None, cost: float | None,
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

    def _cost(self, call: _Call, usage: dict[str, Any] | None) -> float | None:
        a = call.attempt
        if a is None:
            return None
        return request_cost(a.provider.cfg.prices or self.router_ref.router.config.default_prices, usage)

    def _finish(self, call: _Call, status: int, out: dict[str, Any] | None, *,
                upstream_id: str | None = None, base_url: str | None = None,
                error: GatewayError | None = None, cost: float | None | EllipsisType = ...,
                relayed: int | None = None) -> None:
        """Metrics, shadow, spend, and the interaction record (``cost``: if already known;
        ``relayed``: streamed deltas, the completion tokens when the upstream sent no usage)."""
        latency = time.perf_counter() - call.started
        a = call.attempt
        if status >= 500 or self.access_log:
            logger.log(logging.WARNING if status >= 500 else logging.INFO, "chat completion",
                    extra={"request_id": call.id, "model": call.body.get("model"),
                           "target": a.target if a else None, "status": status,
                           "latency_ms": round(latency * 1000, 2), "attempts": call.attempts,
                           "project": call.principal.project,
                           "error": error.message if error else None})
        alias = a.alias if a else call.body.get("model", "")
        usage = out.get("usage") if out else None
        if cost is ...:
            cost = self._cost(call, usage)
        metrics.observe(alias, a.target if a else None, a.arm if a else None, status,
                        bool(call.body.get("stream")), latency, call.ttft, usage, cost, call.principal.project)
        router: Router = self.router_ref.router
        if status == 200 and a is not None and call.body["model"] in router:
            self.shadows.maybe(router, call.body["model"], call.body, call.id)
        self._settle(call, usage, cost, out)
        requested = router.aliases.get(call.body["model"])  # None if a reload removed it meanwhile
        policy = requested.cfg.log if requested else "all"
        if policy == "none" or (policy == "store" and call.body.get("store") is not True):
            return
        choices = out.get("choices") if out else None
        self.log.submit(InteractionRecord(
            id=call.id, created=call.created, requested_model=call.body.get("model", ""),
            project=call.principal.project, api_key_id=call.principal.key_id,
            target=a.target if a else None, upstream_model=a.model if a else None,
            upstream_base_url=base_url, upstream_id=upstream_id, arm=a.arm if a else None,
            attempts=call.attempts, stream=bool(call.body.get("stream")),
            store=call.body.get("store") is True, request=call.body,
            response=out if status in (200, 499) else None,
            finish_reason=choices[0].get("finish_reason") if choices else None,
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=usage.get("completion_tokens") if usage else relayed,
            cached_tokens=((usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                           if usage else None),
            total_tokens=usage.get("total_tokens") if usage else None,
            ttft_s=call.ttft, latency_s=latency, cost_usd=cost, status=status,
            error=error.to_dict()["error"] if error else None,
            metadata=call.body.get("metadata"), redact_pii=bool(requested and requested.cfg.redact_pii)))
