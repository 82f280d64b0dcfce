"""The replies of ``/v1/completions`` (``completions.py``): one ``text_completion`` body, or its SSE chunks.

Each prompt of a request runs as its own engine request (``{id}-{i}``, as vLLM names them), batched with
everything else; their events are merged as they come (:class:`Merged`).  Choice ``index`` is
``prompt * n + choice``, as vLLM and OpenAI number them.  As vLLM writes them:

* ``echo`` prepends the prompt's text to each choice's text (in its first chunk when streamed) and, with
  ``logprobs``, the prompt tokens' entries to its logprobs (the first one null).  With
  ``return_token_ids`` the echoed text is empty (the ids are given instead), a vLLM quirk kept as is.
* ``logprobs`` is the legacy shape ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``:
  each token's top entries are the chosen token and the ``logprobs`` most likely, keyed by their text.
* ``prompt_logprobs`` on a choice: per prompt token, ``{id: {"logprob", "rank", "decoded_token"}}`` for the
  token itself and the top ones (the first token null).
* ``stop_reason``: the stop string or stop token id that ended the choice (None for EOS or length).
* Usage sums every prompt's tokens and every choice's; cached tokens (``prompt_tokens_details``, when the
  engine has it on) are summed over the prompts.  Streamed, ``continuous_usage_stats`` puts the usage of
  the chunk's prompt and choice on each chunk, as vLLM does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from adapters.engine import protocol as P
from adapters.engine import replies
from adapters.engine.engine import RequestStream
from adapters.engine.sampling import SamplingParams

Step = tuple[str, float | None, dict[str, float] | None]  # a token's text, logprob, top entries (legacy)
FLOOR = -9999.0  # vLLM's (and OpenAI's) stand-in for -inf


@dataclass
class Job:
    """A validated completions request, ready to run: one :class:`replies.Shape` per prompt."""

    id: str
    shapes: list[replies.Shape]
    params: SamplingParams
    adapter: str | None
    tokenizer: Any
    echo: bool = False
    echo_only: bool = False  # ``echo`` with ``max_tokens`` 0: the generated token is dropped
    top: int | None = None  # ``logprobs``


@dataclass(slots=True)
class Choice:
    text: str = ""
    tokens: int = 0
    finish: str | None = None
    stop_reason: str | int | None = None
    steps: list[Step] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters so far: the ``text_offset`` of the next token
    started: bool = False


@dataclass(slots=True)
class Piece:
    """What one event adds to one choice."""

    index: int
    text: str
    steps: list[Step]
    ids: list[int]
    offset: int
    finish: str | None
    stop_reason: str | int | None
    tokens: int
    prompt_ids: list[int] | None = None


class Merged:
    """The events of several request streams as ``(prompt index, event)``, in arrival order."""

    def __init__(self, streams: list[RequestStream]):
        self.streams = streams
        self.queue: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()
        self.tasks = [asyncio.ensure_future(self._pump(i, s)) for i, s in enumerate(streams)]

    async def _pump(self, i: int, stream: RequestStream) -> None:
        async for ev in stream:
            self.queue.put_nowait((i, ev))
        self.queue.put_nowait((i, None))

    async def __aiter__(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        left = len(self.streams)
        while left:
            i, ev = await self.queue.get()
            if ev is None:
                left -= 1
            else:
                yield i, ev

    def abort(self) -> None:
        """Stop every prompt's request (a no-op for those that finished)."""
        for task in self.tasks:
            task.cancel()
        for stream in self.streams:
            stream.abort()


class State:
    """Every choice of every prompt, as the events build them."""

    def __init__(self, job: Job):
        self.job, self.n = job, job.params.n
        self.choices = [Choice() for _ in range(len(job.shapes) * self.n)]
        self.prompt_steps: list[list[Step]] = [[] for _ in job.shapes]
        self.prompt_logprobs: list[list[dict[str, Any] | None] | None] = [None for _ in job.shapes]
        self.cached = [0 for _ in job.shapes]

    async def fold(self, p: int, ev: dict[str, Any]) -> Piece | None:
        """Take one event of prompt ``p``; what it adds to its choice (None: nothing)."""
        job, shape = self.job, self.job.shapes[p]
        if "prompt_logprobs" in ev:  # before the prompt's first token (steps.py)
            self.prompt_steps[p], self.prompt_logprobs[p] = await asyncio.to_thread(
                prompt_view, job.tokenizer, shape.prompt, ev["prompt_logprobs"], job.top)
            return None
        if "index" not in ev:
            return None
        i = p * self.n + ev["index"]
        c = self.choices[i]
        self.cached[p] = ev.get("cached_tokens", 0)
        text, ids, steps = ev["text"], list(ev.get("token_ids") or ()), output_steps(ev.get("logprobs"))
        if job.echo_only:
            text, ids, steps = "", [], []
        else:
            c.tokens = ev["completion_tokens"]
        piece = Piece(i, text, steps, ids, c.sent, ev["finish_reason"], ev.get("stop_reason"), c.tokens)
        if not c.started:
            c.started = True
            piece.prompt_ids = shape.prompt if shape.token_ids else None
            if job.echo:
                piece.text, piece.steps = shape.echo + text, self.prompt_steps[p] + steps
        c.text += piece.text
        c.steps += piece.steps
        c.ids += ids
        c.sent += len(piece.text)
        c.finish, c.stop_reason = piece.finish or c.finish, piece.stop_reason
        return piece

    def usage(self) -> dict[str, Any]:
        details = self.job.shapes[0].details
        return P.usage(sum(len(s.prompt) for s in self.job.shapes), sum(c.tokens for c in self.choices),
                       sum(self.cached) if details else None)

    def choice(self, i: int) -> dict[str, Any]:
        c, p = self.choices[i], i // self.n
        shape = self.job.shapes[p]
        return {"index": i, "text": c.text, "logprobs": self.legacy(c.steps, 0), "finish_reason": c.finish,
                "stop_reason": c.stop_reason, "prompt_logprobs": self.prompt_logprobs[p],
                "prompt_token_ids": shape.prompt if shape.token_ids else None,
                "token_ids": c.ids if shape.token_ids else None}

    def legacy(self, steps: list[Step], offset: int) -> dict[str, Any] | None:
        """The legacy ``logprobs`` object of ``steps`` whose text starts at ``offset`` (None: not asked)."""
        if self.job.top is None:
            return None
        offsets = []
        for token, _, _ in steps:
            offsets.append(offset)
            offset += len(token)
        return {"tokens": [s[0] for s in steps], "token_logprobs": [s[1] for s in steps],
                "top_logprobs": [s[2] for s in steps], "text_offset": offsets}


def output_steps(entries: list[dict[str, Any]] | None) -> list[Step]:
    """Generated tokens' entries (chat's shape, ``sequence.py``) as legacy steps: the token, then its top."""
    return [(e["token"], e["logprob"], {e["token"]: e["logprob"], **{t["token"]: t["logprob"]
                                                                        for t in e["top_logprobs"]}})
            for e in entries or ()]


def prompt_view(tokenizer: Any, ids: list[int], raw: list[tuple[int, float, int, list[tuple[int, float]]]],
                top: int | None) -> tuple[list[Step], list[dict[str, Any] | None]]:
    """The prompt's legacy steps (the first without a logprob; ``top`` + 1 entries each) and vLLM's
    ``prompt_logprobs``, from the scheduler's (token, logprob, rank, top) per prompt token after the first."""
    names: dict[int, str] = {}

    def name(t: int) -> str:
        if t not in names:
            names[t] = tokenizer.decode([t], skip_special_tokens=False)
        return names[t]

    steps: list[Step] = [(name(ids[0]), None, None)]
    out: list[dict[str, Any] | None] = [None]
    for t, lp, rank, best in raw:
        entries = {t: (max(lp, FLOOR), rank)}
        for r, (u, v) in enumerate(best, 1):
            entries.setdefault(u, (max(v, FLOOR), r))
        out.append({str(u): {"logprob": v, "rank": r, "decoded_token": name(u)} for u, (v, r) in entries.items()})
        if top is not None:
            steps.append((name(t), entries[t][0], {name(u): v for u, (v, _) in list(entries.items())[: top + 1]}))
    return steps, out


async def complete(request: Request, job: Job, merged: Merged) -> Response:
    state = State(job)

    async def collect() -> None:
        async for p, ev in merged:
            if "error" in ev:
                replies.raise_event_error(ev)
            await state.fold(p, ev)

    try:
        if not await replies.unless_gone(request, collect(), merged.abort):
            return Response(status_code=499)
    finally:
        merged.abort()
    body = {"id": job.id, "object": "text_completion", "created": P.now(), "model": job.shapes[0].model,
            "choices": [state.choice(i) for i in range(len(state.choices))], "usage": state.usage(),
            "system_fingerprint": None, "service_tier": None}
    return Response(orjson.dumps(body), media_type="application/json")


async def sse(job: Job, merged: Merged) -> AsyncIterator[bytes]:
    """``text_completion`` chunks as tokens come, then the usage chunk (``include_usage``) and ``[DONE]``."""
    state, created, shape = State(job), P.now(), job.shapes[0]
    head = {"id": job.id, "object": "text_completion", "created": created, "model": shape.model}

    def frame(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    try:
        failed = False
        async for p, ev in merged:
            if "error" in ev:
                yield frame({"error": {"message": ev["error"], "type": "internal_error", "param": None,
                                       "code": "engine_error"}})
                failed = True
                break
            piece = await state.fold(p, ev)
            if piece is None or not (piece.text or piece.finish or piece.steps or piece.ids):
                continue
            choice: dict[str, Any] = {"index": piece.index, "text": piece.text,
                                      "logprobs": state.legacy(piece.steps, piece.offset),
                                      "finish_reason": piece.finish, "stop_reason": piece.stop_reason}
            if shape.token_ids:
                choice["token_ids"] = piece.ids
                if piece.prompt_ids is not None:
                    choice["prompt_token_ids"] = piece.prompt_ids
            chunk = {**head, "choices": [choice]}
            if shape.continuous:
                chunk["usage"] = job.shapes[p].usage(piece.tokens, state.cached[p])
            yield frame(chunk)
        if shape.include_usage and not failed:
            yield frame({**head, "choices": [], "usage": state.usage()})
        yield b"data: [DONE]\n\n"
    finally:
        merged.abort()  # no-op when finished; frees the rows when the client went away
