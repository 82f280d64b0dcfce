"""Fill a real log (SQLite or PostgreSQL) through ``LogService`` and the feedback store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.log.record import InteractionRecord
from gateway.log.service import LogService

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def record(i: int, user: str, reply: str | None, *, model: str = "bot", adapter: str = "v3",
           status: int = 200, tools: bool = False, finish: str = "stop",
           metadata: dict[str, str] | None = None, project: str = "acme",
           created: float | None = None, tool_call: bool = False) -> InteractionRecord:
    req: dict[str, Any] = {"model": model, "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": user}]}
    if tools:
        req["tools"] = TOOLS
        req["parallel_tool_calls"] = False
    msg: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
    if tool_call:
        msg["content"] = None
        msg["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    resp = None if status != 200 else {
        "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1, "model": adapter,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}]}
    return InteractionRecord(
        id=f"chatcmpl-{i}", created=created if created is not None else 1_700_000_000 + i,
        project=project, requested_model=model, upstream_model=adapter, request=req,
        response=resp, status=status, finish_reason=finish if resp else None,
        metadata=metadata, error=None if status == 200 else {"message": "boom"})


def fill(url: str, home: Path, records: list[InteractionRecord],
         feedback: list[dict[str, Any]] = ()) -> None:
    svc = LogService.open_sync(url, home)
    try:
        for r in records:
            svc.submit(r)
        svc.sync_blocking(30)
        now = time.time()
        for k, fb in enumerate(feedback):
            row = {"id": f"fb-{k}-{fb['completion_id']}", "created": now + k, "rating": None,
                   "correction": None, **fb}
            assert svc.store.add_feedback(row) is not None, fb
    finally:
        svc.close_sync()
