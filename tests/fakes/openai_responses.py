"""The fake upstream's ``POST /v1/responses`` (OpenAI's Responses API, as the gateway passes it through).

Scripted by model name like its chat route (tests/fakes/openai_upstream.py): ``fake-error-NNN`` (OpenAI's
error envelope), ``fake-tools`` (a ``function_call`` item), ``fake-agent`` (a function call until the input
ends with a ``function_call_output``, then an answer echoing that output), ``fake-midstream-error`` (a
stream that sends an ``error`` event after a few deltas); any other model echoes the text of the last
user message (``"echo: <text>"``). Plain: a ``Response`` object; ``stream: true``: the documented events
(``event:`` and ``data:`` lines), ``response.created``, ``response.in_progress``, then per item
``response.output_item.added``, for a message ``response.content_part.added``,
``response.output_text.delta``…, ``response.output_text.done``, ``response.content_part.done``, for a
function call ``response.function_call_arguments.delta``… and ``.done``, then
``response.output_item.done``, and ``response.completed``. Usage counts words; half the input
tokens are reported cached. Requests are recorded with the chat ones (``path``: ``/v1/responses``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

CHUNK_WORDS = 3
CALL = {"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": '{"city": "Paris"}'}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    given = body.get("input")
    return [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])


def _reply(body: dict[str, Any]) -> tuple[str | None, str]:
    """(the text answer, or None for a function call; the input's text, for usage)."""
    items = _items(body)
    last = items[-1] if items else {}
    said = " ".join(_text(i.get("content")) for i in items if i.get("type", "message") == "message")
    if body["model"] == "fake-tools" or (body["model"] == "fake-agent" and last.get("type") != "function_call_output"):
        return None, said
    if body["model"] == "fake-agent":
        return f"echo: {last.get('output')}", said
    user = next((_text(i.get("content")) for i in reversed(items) if i.get("role") == "user"), "")
    return f"echo: {user}", said


def _usage(said: str, reply: str) -> dict[str, Any]:
    p, c = len(said.split()), len(reply.split())
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": p // 2}, "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}


def _response(rid: str, body: dict[str, Any], status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None) -> dict[str, Any]:
    out = {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "background": False,
           "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
           "model": body["model"], "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
           "previous_response_id": body.get("previous_response_id"), "store": body.get("store", True),
           "temperature": body.get("temperature", 1.0), "text": body.get("text") or {"format": {"type": "text"}},
           "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
           "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
           "metadata": body.get("metadata") or {}}
    if usage is not None:
        out["usage"] = usage
    if body.get("max_output_tokens") is not None:
        out["max_output_tokens"] = body["max_output_tokens"]
    return out


def _output(rid: str, reply: str | None) -> dict[str, Any]:
    if reply is None:
        return {"id": f"fc_{rid}", **CALL, "status": "completed"}
    return {"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": reply, "annotations": [], "logprobs": []}]}


def add_responses(app: FastAPI, error: Any) -> None:
    """``error(status, message, code)``: the chat route's error response in OpenAI's envelope."""

    @app.post("/v1/responses")
    async def responses(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append({"body": body, "headers": dict(request.headers), "path": "/v1/responses"})
        model = body.get("model", "")
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            return error(status, f"scripted failure {status}", "rate_limit_exceeded" if status == 429 else None)
        if not isinstance(body.get("input"), str | list):
            return error(400, "bad request: 'input' is required", None)
        reply, said = _reply(body)
        rid = f"up{time.time_ns()}"
        if body.get("stream"):
            return StreamingResponse(_stream(rid, body, reply, said), media_type="text/event-stream")
        return _response(f"resp_{rid}", body, "completed", [_output(rid, reply)], _usage(said, reply or ""))


def _stream(rid: str, body: dict[str, Any], reply: str | None, said: str) -> Iterator[bytes]:
    seq = iter(range(10_000))

    def event(kind: str, **fields: Any) -> bytes:
        data = json.dumps({"type": kind, **fields, "sequence_number": next(seq)})
        return f"event: {kind}\ndata: {data}\n\n".encode()

    pending = _response(f"resp_{rid}", body, "in_progress", [], None)
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    done = _output(rid, reply)
    where = {"item_id": done["id"], "output_index": 0}
    if reply is None:
        pending_call = {**done, "arguments": "", "status": "in_progress"}
        yield event("response.output_item.added", output_index=0, item=pending_call)
        for i in range(0, len(CALL["arguments"]), 5):
            yield event("response.function_call_arguments.delta", **where, delta=CALL["arguments"][i:i + 5])
        yield event("response.function_call_arguments.done", **where, name=CALL["name"], arguments=CALL["arguments"])
    else:
        yield event("response.output_item.added", output_index=0, item={**done, "status": "in_progress", "content": []})
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", **where, content_index=0, part=empty)
        words = reply.split(" ")
        for i in range(0, len(words), CHUNK_WORDS):
            part = " ".join(words[i:i + CHUNK_WORDS])
            yield event("response.output_text.delta", **where, content_index=0, delta=part if i == 0 else " " + part,
                        logprobs=[])
            if i >= CHUNK_WORDS and body["model"] == "fake-midstream-error":
                yield event("error", code="server_error", message="scripted mid-stream failure", param=None)
                return
        yield event("response.output_text.done", **where, content_index=0, text=reply, logprobs=[])
        yield event("response.content_part.done", **where, content_index=0, part=done["content"][0])
    yield event("response.output_item.done", output_index=0, item=done)
    final = _response(f"resp_{rid}", body, "completed", [done], _usage(said, reply or ""))
    yield event("response.completed", response=final)
