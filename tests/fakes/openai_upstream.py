"""A loopback server that follows OpenAI's chat completions API, scripted by model name.

Model names choose the behaviour (like TensorZero's dummy provider):
  anything            -> echoes the last user message ("echo: ...")
  fake-tools          -> answers with a tool call (streamed in pieces)
  fake-agent          -> like fake-tools until the last message is a tool result, then echoes
                         that result ("echo: <result>"): an agent's loop, call then answer
  fake-slow[-S]       -> waits S seconds (default 2) before answering
  fake-hang           -> never answers
  fake-error-NNN      -> answers HTTP NNN in OpenAI's error envelope (429 adds retry-after: 1)
  fake-drop           -> streams two chunks, then cuts the connection
  fake-midstream-error-> streams two chunks, then an SSE error event
  fake-slowstream     -> streams with 0.1 s between chunks
  fake-length         -> echoes, with finish_reason "length" (cut by max_tokens)
It records every request (body and headers) for assertions: GET /_requests, DELETE /_requests.
It also answers GET /v1/models and GET /health like vLLM, POST /v1/completions (the legacy
API, scripted the same way: tests/fakes/openai_completions.py) and POST /v1/responses (the Responses
API: tests/fakes/openai_responses.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.fakes.openai_completions import add_completions
from tests.fakes.openai_responses import add_responses
from tests.fakes.threaded import ThreadedServer

CHUNK_WORDS = 3


def _usage(prompt: str, reply: str) -> dict[str, Any]:
    p, c = len(prompt.split()), len(reply.split())
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def _tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The content of the last message when it is a tool result."""
    if messages and messages[-1].get("role") == "tool":
        c = messages[-1].get("content")
        return c if isinstance(c, str) else json.dumps(c)
    return None


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    headers = {"retry-after": "1"} if status == 429 else {}
    types = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             429: "requests"}
    return JSONResponse({"error": {"message": message, "type": types.get(status, "server_error"),
                                   "param": None, "code": code}}, status_code=status, headers=headers)


TOOL_CALL = {"id": "call_abc123", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.requests = []

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-echo", "object": "model", "created": 0,
                                             "owned_by": "fake"}]}

    @app.get("/_requests")
    async def requests() -> list[dict[str, Any]]:
        return app.state.requests

    @app.delete("/_requests")
    async def clear() -> dict[str, bool]:
        app.state.requests.clear()
        return {"ok": True}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        try:
            return await _chat(body, request)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # like a real API: 400
            return _error(400, f"bad request: {exc}")

    async def _chat(body: Any, request: Request) -> Any:
        app.state.requests.append({"body": body, "headers": dict(request.headers)})
        model = body.get("model", "")
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            return _error(status, f"scripted failure {status}",
                          "rate_limit_exceeded" if status == 429 else None)
        if model == "fake-hang":
            await asyncio.sleep(3600)
        if model.startswith("fake-slow"):
            await asyncio.sleep(float(model.split("-")[2]) if model.count("-") >= 2 else 2.0)
        messages = body.get("messages", [])
        prompt, result = _last_user(messages), _tool_result(messages)
        tools = model == "fake-tools" or (model == "fake-agent" and result is None)
        reply = f"echo: {result if model == 'fake-agent' and result is not None else prompt}"
        cid = f"chatcmpl-up{time.time_ns()}"
        if body.get("stream"):
            return StreamingResponse(_stream(cid, model, prompt, reply, body, tools),
                                     media_type="text/event-stream")
        n = int(body.get("n") or 1)
        choices = [{"index": i, "message": {"role": "assistant", "content": None if tools else reply,
                                            "refusal": None, "annotations": [],
                                            **({"tool_calls": [TOOL_CALL]} if tools else {})},
                    "finish_reason": "tool_calls" if tools else _finish(model), "logprobs": None}
                   for i in range(n)]
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": _usage(prompt, reply), "service_tier": "default",
                "system_fingerprint": "fp_fake"}

    add_completions(app, _error)
    add_responses(app, _error)
    return app


def _finish(model: str) -> str:
    return "length" if model == "fake-length" else "stop"


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _stream(cid: str, model: str, prompt: str, reply: str, body: dict[str, Any], tools: bool):
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_fake"}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                          "logprobs": None}], **extra})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if tools:
        args = TOOL_CALL["function"]["arguments"]
        yield chunk({"tool_calls": [{"index": 0, "id": TOOL_CALL["id"], "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]})
        for i in range(0, len(args), 5):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 5]}}]})
        yield chunk({}, "tool_calls")
    else:
        words = reply.split(" ")
        for i in range(0, len(words), CHUNK_WORDS):
            part = " ".join(words[i:i + CHUNK_WORDS])
            yield chunk({"content": part if i == 0 else " " + part})
            if i >= CHUNK_WORDS and model in ("fake-drop", "fake-midstream-error"):
                if model == "fake-drop":
                    raise ConnectionResetError("scripted drop")
                yield _sse({"error": {"message": "scripted mid-stream failure", "type": "server_error",
                                      "param": None, "code": None}})
                return
            await asyncio.sleep(0.1 if model == "fake-slowstream" else 0)
        yield chunk({}, _finish(model))
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _usage(prompt, reply)})
    yield b"data: [DONE]\n\n"


class FakeUpstream(ThreadedServer):
    """Runs the fake in a background thread on a free loopback port."""

    def __init__(self, port: int) -> None:
        super().__init__(make_app(), port)
