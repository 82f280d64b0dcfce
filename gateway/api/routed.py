"""The routed request path that chat completions and (legacy) completions share, as a raw ASGI base.

``RoutedEndpoint`` parses the body once (orjson), lets the API check it, routes it (aliases,
weighted canaries, fallbacks), admits it against the key's limits, forwards it to the chosen
route and relays the reply. Streams are relayed chunk by chunk; a failed attempt moves on to
the next route (fallback) only while nothing has reached the client. The interaction record
is handed to the log without waiting (``gateway.api.finish``).

A client that goes away mid-request (``DisconnectWatch``) cancels the upstream call at once
and is recorded as 499, with the text relayed so far. The caller's project goes to the
provider as ``tenant`` (vLLM's ``x-tuneloop-tenant``; the breakers' notion of who).

An API is a subclass (``gateway.api.chat``, ``gateway.api.completions``, and the Responses API's
``gateway.api.responses_native`` (passed through) and ``gateway.api.responses_translated`` (onto chat))
that fills in the hooks of
``gateway.api.routed_hooks``: how a body is checked, routed and priced, which provider call serves
it, how a stream is assembled for the record, and how the reply is relayed; everything else
(retries, timeouts, fallbacks, limits, metrics, cost, the log) is this module's and the same for
all. ``serve`` takes a body already read (the Responses endpoint reads and checks its own).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway import metrics
from gateway.api.disconnect import DisconnectWatch, client_closed
from gateway.api.finish import Call
from gateway.api.routed_hooks import RoutedHooks
from gateway.asgi import Receive, Scope, Send, header, parse_json, read_body, send_error, send_json, text_header
from gateway.auth import ANONYMOUS, Authenticator, Principal
from gateway.errors import GatewayError, UpstreamClientError, UpstreamError, UpstreamTimeout
from gateway.providers.base import Reply
from gateway.ratelimit import Limiter
from gateway.raw_chunks import RawChunks
from gateway.resilience import backoff_s
from gateway.router import Attempt, Router

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
               (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
T = TypeVar("T")

# 96 random bits per id from a generator seeded by the OS once per process: unique in
# practice, and without os.urandom's system call on every request (~9% of the hot path).
_ids = random.Random(os.urandom(32))


def new_id(prefix: str) -> str:
    return f"{prefix}{_ids.getrandbits(96):024x}"


def retryable(exc: GatewayError) -> bool:
    """Connect errors, timeouts, 5xx and 429 move on to the next route; other 4xx do not."""
    if isinstance(exc, UpstreamClientError):
        return exc.status_code in (408, 429)
    return isinstance(exc, UpstreamError)


class RoutedEndpoint(RoutedHooks):
    """The shared path; a subclass fills in the hooks (``gateway.api.routed_hooks``)."""

    id_prefix = "chatcmpl-"

    def __init__(self, router_ref: Any, log: Any, max_body: int, auth: Authenticator, limiter: Limiter) -> None:
        super().__init__(router_ref, log, limiter)
        self.max_body = max_body
        self.auth = auth

    # ---- the path ----
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = (await self.auth.principal(header(scope, b"authorization"))
                         if self.auth.required else ANONYMOUS)
            body = parse_json(await read_body(scope, receive, self.max_body))
        except GatewayError as exc:
            await send_error(send, exc)
            return
        await self.serve(scope, receive, send, principal, body)

    async def serve(self, scope: Scope, receive: Receive, send: Send, principal: Principal, body: Any,
                    context: Any = None) -> None:
        """A request whose body is read and whose caller is known (``context``: the API's own, on the Call)."""
        router: Router = self.router_ref.router
        try:
            self.check(body)
            if principal.limits:
                self.cap(principal, body)
            user = body.get("user") or text_header(scope, b"x-tuneloop-user")
            plan = self.routes(router, body, user)
            reservation = (await self.limiter.admit(principal, self.ask(
                principal, body, plan, router.config.default_prices)) if principal.limits else None)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        call = Call(new_id(self.id_prefix), body, principal, reservation, context)
        watch = DisconnectWatch(receive)
        try:
            if body.get("stream"):
                await self._stream(call, plan, watch, send)
            else:
                await self._complete(call, plan, watch, send)
        finally:
            watch.stop()
            self.settle(call, None, None, None)  # released if the request ended without finish

    async def _try_routes(self, call: Call, plan: list[Attempt],
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

    async def _complete(self, call: Call, plan: list[Attempt], watch: DisconnectWatch, send: Send) -> None:
        def op(attempt: Attempt) -> Awaitable[Reply]:
            return self.call(attempt, self._upstream_body(call, attempt), call.principal.project)

        reply = await self._first_byte(call, watch, send, self._try_routes(call, plan, op))
        if reply is None:
            return
        watch.stop()
        payload, out, upstream_id = await self.answer(call, reply.body)
        headers = self._headers(call)
        cost = self.cost(call, out.get("usage"))
        if cost is not None:
            headers.append((b"x-tuneloop-cost-usd", f"{cost:.8f}".encode()))
        await send_json(send, 200, payload, headers)
        self.finish(call, 200, out, upstream_id=upstream_id, base_url=reply.base_url, cost=cost)

    async def _first_byte(self, call: Call, watch: DisconnectWatch, send: Send, work: Awaitable[T]) -> T | None:
        """``work``'s result; or None when it failed before anything reached the client: the error
        sent (or the client gone: 499) and the request finished here."""
        try:
            return await work
        except GatewayError as exc:
            watch.stop()
            await send_error(send, exc, call.id)
            self.finish(call, exc.status_code, None, error=exc)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            self.finish(call, 499, None, error=client_closed())
        return None

    def _headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        a = call.attempt
        headers = [(b"x-request-id", call.id.encode())]
        if call.reservation is not None:
            headers += call.reservation.headers
        if a is not None:
            headers.append((b"x-tuneloop-target", a.target.encode()))
            if a.arm:
                headers.append((b"x-tuneloop-arm", a.arm.encode()))
        return headers

    async def _open_stream(self, call: Call, plan: list[Attempt]) -> tuple[Any, Any, list | None]:
        """Open the first route that yields a first chunk; failures here may retry or fall back."""

        async def op(attempt: Attempt) -> tuple[Any, Any, list | None]:
            up = self.stream_body(call, attempt)
            cfg = attempt.provider.cfg
            limit = cfg.ttft_timeout_s or cfg.timeout_s
            deadline = time.perf_counter() + limit
            try:
                stream = await asyncio.wait_for(self.open(attempt, up, call.principal.project), limit)
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

    async def _stream(self, call: Call, plan: list[Attempt], watch: DisconnectWatch, send: Send) -> None:
        opened = await self._first_byte(call, watch, send, self._open_stream(call, plan))
        if opened is None:
            return
        stream, chunks, first = opened
        if watch.absorb():  # Python 3.11's wait_for returns a result that raced our cancellation
            await stream.aclose()
            self.finish(call, 499, None, error=client_closed())
            return
        want_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        asm = self.stream_state(call)
        status, error = 200, None
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": SSE_HEADERS + self._headers(call)})
            batch, ended = first, False
            while batch is not None:
                out = self.frames(call, asm, batch, want_usage)
                ended = stream.done  # the stream's end came in this read: finish in the same write
                if ended:
                    out.append(await self.closing(call, asm))
                    watch.stop()  # before the last write (after it receive() says "disconnect")
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": not ended})
                    if call.ttft is None:
                        call.ttft = time.perf_counter() - call.started
                batch = await anext(chunks, None)
            if not ended:
                last = await self.closing(call, asm)
                watch.stop()
                await send({"type": "http.response.body", "body": last, "more_body": False})
        except GatewayError as exc:  # the upstream broke mid-stream: tell the client in-band
            watch.stop()
            status, error = exc.status_code, exc
            await self._send_stream_error(send, await self.stream_error(call, asm, exc))
        except (OSError, asyncio.CancelledError) as exc:  # the client went away: the upstream closes
            if isinstance(exc, asyncio.CancelledError) and not watch.absorb():
                raise
            status, error = 499, client_closed(asm.deltas)
        finally:
            await stream.aclose()
        chunks = None
        if isinstance(asm, RawChunks):  # a 200 with usage: the writer assembles the record's reply
            completion, chunks = asm.for_record(call.id, call.created, status)
        else:
            completion = asm.completion(call.id, call.created)
        self.finish(call, status, completion, upstream_id=asm.upstream_id, base_url=stream.base_url,
                    error=error, relayed=None if chunks else asm.deltas, chunks=chunks)

    @staticmethod
    async def _send_stream_error(send: Send, body: bytes) -> None:
        try:
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except OSError:
            pass
