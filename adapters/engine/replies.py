"""A request's reply from its engine events: one JSON body (``complete``) or OpenAI's SSE chunks (``sse``).

Events come from the scheduler through :class:`~adapters.engine.engine.RequestStream`: text deltas per
choice (with their logprobs entries when asked), the finish reason, token counts, or an error.  With tools
(``calls``), a choice's text is read for Hermes tool calls (``tools.parse``) when it ends.  A client that
disconnects aborts its request at once (its KV rows are freed before the next decode step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from adapters.engine import protocol as P
from adapters.engine.engine import EngineError, RequestStream
from adapters.engine.tool_stream import CallStream
from adapters.engine.tools import parse


@dataclass(slots=True)
class Shape:
    """What a reply holds beside its tokens, from the request and the engine's flags."""

    model: str
    prompt: list[int]
    n: int = 1
    logprobs: bool = False
    calls: bool = False  # each choice's text is read for tool calls
    constrained: bool = False  # ... and follows the tools' grammar (streams calls as they come)
    include_usage: bool = False
    continuous: bool = False  # usage on every chunk
    details: bool = False  # usage.prompt_tokens_details (--enable-prompt-tokens-details)
    echo: str = ""  # prepended to each choice (``echo``)
    token_ids: bool = False  # ``return_token_ids``

    def usage(self, completion_tokens: int, cached: int) -> dict[str, Any]:
        return P.usage(len(self.prompt), completion_tokens, cached if self.details else None)


def raise_event_error(ev: dict[str, Any]) -> None:
    status = int(ev.get("status", 500))
    raise EngineError(ev["error"], status, "invalid_request_error" if status < 500 else "internal_error",
                      "model_not_found" if status == 404 else None)


async def complete(request: Request, stream: RequestStream, shape: Shape) -> Response:
    n = shape.n
    texts, finish, tokens = [shape.echo] * n, [None] * n, [0] * n
    entries: list[list[dict[str, Any]] | None] = [[] if shape.logprobs else None for _ in range(n)]
    ids: list[list[int]] = [[] for _ in range(n)]
    cached = [0]

    async def collect() -> None:
        async for ev in stream:
            if "error" in ev:
                raise_event_error(ev)
            if "index" in ev:
                i = ev["index"]
                texts[i] += ev["text"]
                tokens[i] = ev["completion_tokens"]
                cached[0] = ev.get("cached_tokens", 0)
                finish[i] = ev["finish_reason"] or finish[i]
                if ev.get("logprobs") is not None and (mine := entries[i]) is not None:
                    mine.extend(ev["logprobs"])
                ids[i] += ev.get("token_ids") or ()

    if not await unless_gone(request, collect(), stream.abort):
        return Response(status_code=499)
    choices = [_choice(i, texts[i], finish[i], tokens[i], entries[i], shape.calls) for i in range(n)]
    body = P.chat_completion(P.completion_id(), shape.model, P.now(), choices, len(shape.prompt),
                             cached[0] if shape.details else None)
    if shape.token_ids:
        body["prompt_token_ids"] = shape.prompt
        for c in choices:
            c["token_ids"] = ids[c["index"]]
    return Response(orjson.dumps(body), media_type="application/json")


async def unless_gone(request: Request, work: Coroutine[Any, Any, None], abort: Callable[[], None]) -> bool:
    """Run ``work`` (which re-raises its errors) unless the client disconnects first: then cancel it, call
    ``abort`` (the request's rows are freed before the next decode step) and return False."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():  # the client went away (or this handler was cancelled)
            task.cancel()
            abort()
    if not task.done() or task.cancelled():  # cancel() above takes effect only when the task next runs
        return False
    task.result()
    return True


def _choice(i: int, text: str, finish: str | None, tokens: int, entries: list[dict[str, Any]] | None,
            calls: bool) -> dict[str, Any]:
    if not calls:
        return P.choice(i, text, finish, tokens, entries)
    content, tool_calls = parse(text)
    return P.choice(i, content, "tool_calls" if tool_calls else finish, tokens, entries, tool_calls)


async def sse(stream: RequestStream, shape: Shape) -> AsyncIterator[bytes]:
    """Chunks as tokens come. With tools: a constrained reply (``required``, a named function) streams
    each call as it is written (``tool_stream.CallStream``); with ``auto``, each choice's text is held
    until it ends, then sent as its content and ``tool_calls`` (a free-form block is only known whole)."""
    cid, created, n, model = P.completion_id(), P.now(), shape.n, shape.model
    calls, continuous = shape.calls, shape.continuous
    tokens = [0] * n
    cached = [0]
    held: list[str] = [""] * n  # with tools: text and logprobs until the choice ends
    held_lp: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    held_ids: list[list[int]] = [[] for _ in range(n)]
    streams = [CallStream() for _ in range(n)] if calls and shape.constrained else None

    def frame(obj: dict[str, Any], ids: list[int] | None = None) -> bytes:
        if shape.token_ids and obj.get("choices"):
            obj["choices"][0]["token_ids"] = ids or []
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def usage() -> dict[str, Any]:
        return shape.usage(sum(tokens), cached[0])

    try:
        for i in range(n):
            first = P.chunk(cid, model, created, [P.delta(i, "", role="assistant")], usage() if continuous else None)
            if shape.token_ids:
                first["prompt_token_ids"] = shape.prompt
            yield frame(first)
            if shape.echo:
                yield frame(P.chunk(cid, model, created, [P.delta(i, shape.echo)], usage() if continuous else None))
        async for ev in stream:
            if "error" in ev:
                yield frame({"error": {"message": ev["error"], "type": "internal_error", "param": None,
                                       "code": "engine_error"}})
                break
            if "index" not in ev:
                continue
            i = ev["index"]
            tokens[i] = ev["completion_tokens"]
            cached[0] = ev.get("cached_tokens", 0)
            held_ids[i] += ev.get("token_ids") or ()
            if streams is not None:
                if (part := _call_chunk(streams[i], ev, cid, model, created, usage() if continuous else None)):
                    yield frame(part, held_ids[i])
                    held_ids[i] = []
                continue
            if calls:
                held[i] += ev["text"]
                held_lp[i] += ev.get("logprobs") or []
                if ev["finish_reason"]:
                    content, tool_calls = parse(held[i])
                    finish = "tool_calls" if tool_calls else ev["finish_reason"]
                    lp = held_lp[i] if ev.get("logprobs") is not None else None
                    yield frame(P.chunk(cid, model, created, [P.delta(i, content, finish_reason=finish,
                                                                       logprobs=lp, tool_calls=tool_calls)],
                                        usage() if continuous else None), held_ids[i])
                continue
            if ev["text"] or ev["finish_reason"]:
                yield frame(P.chunk(cid, model, created, [P.delta(i, ev["text"], finish_reason=ev["finish_reason"],
                                                                   logprobs=ev.get("logprobs"))],
                                    usage() if continuous else None), held_ids[i])
                held_ids[i] = []
        if shape.include_usage:
            yield frame(P.chunk(cid, model, created, [], usage()))
        yield b"data: [DONE]\n\n"
    finally:
        stream.abort()  # no-op when finished; frees the rows when the client went away


def _call_chunk(calls: CallStream, ev: dict[str, Any], cid: str, model: str, created: int,
                usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """One event of a constrained tool-calling choice as a chunk: the call deltas its text completes
    (None when it completes nothing yet and carries no logprobs)."""
    deltas, content, finish = calls.feed(ev["text"]), None, None
    if ev["finish_reason"]:
        content, more = calls.flush()
        deltas += more
        finish = "tool_calls" if calls.completed else ev["finish_reason"]
    if not (deltas or content or finish or ev.get("logprobs")):
        return None
    return P.chunk(cid, model, created, [P.delta(ev["index"], content, finish_reason=finish,
                                                 logprobs=ev.get("logprobs"), call_deltas=deltas)], usage)
