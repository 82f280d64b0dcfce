"""A loopback OpenAI-style upstream whose every reply uses its whole budget: the worst case
for a per-key limit.

``usage`` reports ``completion_tokens`` = max_completion_tokens (or max_tokens, else 16) × n
and ``prompt_tokens`` = the UTF-8 bytes of the messages' strings / 4, rounded up (below the
gateway's estimate, as a real tokenizer usually is). The model name sets the pace:
``usage-<ms>`` answers after <ms> milliseconds (default 200), streamed or not; a stream sends
one chunk per completion token, <ms> apart, then the usage chunk. ``GET /_stats`` counts the
requests it answered and the tokens it reported (``DELETE /_stats`` resets), so a test can
compare what the upstream billed with a key's limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.fakes.threaded import ThreadedServer


def _prompt_tokens(messages: Any) -> int:
    text = sum(len(m["content"].encode()) for m in messages
               if isinstance(m, dict) and isinstance(m.get("content"), str))
    return -(-text // 4)


def _completion_tokens(body: dict[str, Any]) -> int:
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or 16
    return int(asked) * int(body.get("n") or 1)


def make_app() -> FastAPI:
    app = FastAPI()
    stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "streams_open": 0}
    app.state.stats = stats

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/_stats")
    async def get_stats() -> dict[str, int]:
        return stats

    @app.delete("/_stats")
    async def reset() -> dict[str, int]:
        stats.update(requests=0, prompt_tokens=0, completion_tokens=0)
        return stats

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body["model"]
        delay = float(model.split("-")[1]) / 1000 if model.count("-") else 0.2
        p, c = _prompt_tokens(body["messages"]), _completion_tokens(body)
        usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        cid = f"chatcmpl-usage{time.time_ns()}"
        if body.get("stream"):
            return StreamingResponse(_stream(stats, cid, model, usage, delay, body), media_type="text/event-stream")
        await asyncio.sleep(delay)
        stats["requests"] += 1
        stats["prompt_tokens"] += p
        stats["completion_tokens"] += c
        n = int(body.get("n") or 1)
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length",
                             "logprobs": None} for i in range(n)],
                "usage": usage}

    return app


async def _stream(stats: dict[str, int], cid: str, model: str, usage: dict[str, int], delay: float,
                  body: dict[str, Any]):
    base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    stats["streams_open"] += 1
    try:
        for i in range(usage["completion_tokens"]):
            delta = {"role": "assistant", "content": "x"} if i == 0 else {"content": "x"}
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
            await asyncio.sleep(delay)
        stats["requests"] += 1
        stats["prompt_tokens"] += usage["prompt_tokens"]
        stats["completion_tokens"] += usage["completion_tokens"]
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        stats["streams_open"] -= 1


class UsageUpstream(ThreadedServer):
    """Runs in a background thread on a loopback port."""

    def __init__(self, port: int) -> None:
        super().__init__(make_app(), port)
