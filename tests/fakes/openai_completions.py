"""The fake upstream's ``POST /v1/completions`` (OpenAI's legacy API, ``CreateCompletionResponse``).

Scripted by model name like its chat route (tests/fakes/openai_upstream.py): ``fake-error-NNN``,
``fake-hang``, ``fake-slow[-S]``, ``fake-length``, ``fake-drop`` and ``fake-midstream-error``; any
other model echoes each prompt (``"echo: <prompt>"``; token ids as their numbers). One choice per
prompt and ``n`` (``index`` = prompt × n + j), ``echo`` puts the prompt in front, ``logprobs`` gets
a ``logprobs`` object (one token per word, each -0.5). Streams are ``text_completion`` chunks of
a few words, then ``[DONE]``; with ``stream_options.include_usage`` every chunk has ``usage: null``
and a last chunk with ``choices: []`` has the usage. Requests are recorded with the chat ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

CHUNK_WORDS = 3


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [" ".join(map(str, prompt))]
    return [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]


def _logprobs(text: str, k: int) -> dict[str, Any]:
    words = text.split(" ")
    return {"tokens": words, "token_logprobs": [-0.5] * len(words),
            "top_logprobs": [{w: -0.5} for w in words] if k else None,
            "text_offset": [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]}


def _usage(prompts: list[str], texts: list[str]) -> dict[str, Any]:
    p, c = sum(len(x.split()) for x in prompts), sum(len(x.split()) for x in texts)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _choices(body: dict[str, Any], prompts: list[str]) -> list[dict[str, Any]]:
    n, finish = int(body.get("n") or 1), "length" if body["model"] == "fake-length" else "stop"
    out = []
    for i, prompt in enumerate(prompts):
        text = (prompt if body.get("echo") else "") + f"echo: {prompt}"
        logprobs = _logprobs(text, body["logprobs"]) if body.get("logprobs") is not None else None
        out += [{"index": i * n + j, "text": text, "logprobs": logprobs, "finish_reason": finish} for j in range(n)]
    return out


def add_completions(app: FastAPI, error: Any) -> None:
    """``error(status, message, code)``: the chat route's error response in OpenAI's envelope."""

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append({"body": body, "headers": dict(request.headers), "path": "/v1/completions"})
        model = body.get("model", "")
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            return error(status, f"scripted failure {status}", "rate_limit_exceeded" if status == 429 else None)
        if model == "fake-hang":
            await asyncio.sleep(3600)
        if model.startswith("fake-slow"):
            await asyncio.sleep(float(model.split("-")[2]) if model.count("-") >= 2 else 2.0)
        if not isinstance(body.get("prompt"), str | list) or not body["prompt"]:
            return error(400, "bad request: 'prompt' is required", None)
        prompts = _prompts(body["prompt"])
        choices = _choices(body, prompts)
        cid = f"cmpl-up{time.time_ns()}"
        if body.get("stream"):
            return StreamingResponse(_stream(cid, model, body, prompts, choices), media_type="text/event-stream")
        return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": _usage(prompts, [c["text"] for c in choices]),
                "system_fingerprint": "fp_fake"}


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _stream(cid: str, model: str, body: dict[str, Any], prompts: list[str], choices: list[dict[str, Any]]):
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    base = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_fake", **({"usage": None} if include_usage else {})}
    for choice in choices:
        words = choice["text"].split(" ")
        for i in range(0, len(words), CHUNK_WORDS):
            part = " ".join(words[i:i + CHUNK_WORDS])
            text = part if i == 0 else " " + part
            logprobs = _logprobs(text, body["logprobs"]) if body.get("logprobs") is not None else None
            yield _sse({**base, "choices": [{"index": choice["index"], "text": text, "logprobs": logprobs,
                                             "finish_reason": None}]})
            if i >= CHUNK_WORDS and model == "fake-drop":
                raise ConnectionResetError("scripted drop")
            if i >= CHUNK_WORDS and model == "fake-midstream-error":
                yield _sse({"error": {"message": "scripted mid-stream failure", "type": "server_error",
                                      "param": None, "code": None}})
                return
        yield _sse({**base, "choices": [{"index": choice["index"], "text": "", "logprobs": None,
                                         "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _usage(prompts, [c["text"] for c in choices])})
    yield b"data: [DONE]\n\n"
