"""Chat completion chunks in, Responses API stream events out (server-sent events).

    events = EventStream(resp_id, body, created_at)
    send(events.start())                  # response.created, response.in_progress
    send(events.chunk(chunk))             # for each chat.completion.chunk (or in-band error)
    response, tail = events.finish()      # closes the open items; ``response`` is the final object
    send(tail + events.final(response))   # ... then response.completed | incomplete | failed

Per output item, in OpenAI's order: ``response.output_item.added``; for a message, per content part
``response.content_part.added``, ``response.output_text.delta``… (or ``response.refusal.delta``…),
``….done``, ``response.content_part.done``; for a tool call ``response.function_call_arguments.delta``…
and ``.done``; then ``response.output_item.done``. Each event carries ``sequence_number`` from 0.
A chat error chunk (the upstream failed mid-stream) ends the response as ``failed``: an ``error``
event, then ``response.failed``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.responses.objects import new_id, response_object, text_part
from gateway.responses.translate import FINISH, usage

PARTS = {  # content part type -> (its text field, the delta/done event prefix)
    "output_text": ("text", "response.output_text"),
    "refusal": ("refusal", "response.refusal"),
}


def _empty_part(kind: str) -> dict[str, Any]:
    return text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}


class EventStream:
    def __init__(self, resp_id: str, body: dict[str, Any], created_at: int) -> None:
        self.resp_id, self.body, self.created_at = resp_id, body, created_at
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.part: dict[str, Any] | None = None  # its open content part
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its open function_call item
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, **fields, "sequence_number": self.seq})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        return response_object(self.resp_id, self.body, self.created_at, status=status, output=self.output, **kw)

    def start(self) -> bytes:
        pending = self._snapshot("in_progress")
        return (self._event("response.created", response=pending)
                + self._event("response.in_progress", response=pending))

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return b""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer; n > 1 is refused before the call
            delta = choice.get("delta") or {}
            for kind in ("refusal", "content"):
                if delta.get(kind):
                    out.append(self._text(kind if kind == "refusal" else "output_text", delta[kind]))
            for call in delta.get("tool_calls") or ():
                out.append(self._call(call))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def _add_item(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)

    def _text(self, kind: str, delta: str) -> bytes:
        out = []
        if self.message is None:
            self.message = {"id": new_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                            "content": []}
            out.append(self._add_item(self.message))
        where = {"item_id": self.message["id"], "output_index": self.output.index(self.message)}
        if self.part is not None and self.part["type"] != kind:
            out.append(self._close_part())
        if self.part is None:
            self.part = _empty_part(kind)
            self.message["content"].append(self.part)
            out.append(self._event("response.content_part.added", **where,
                                   content_index=len(self.message["content"]) - 1, part=self.part))
        field, prefix = PARTS[kind]
        self.part[field] += delta
        extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        out.append(self._event(prefix + ".delta", **where, content_index=len(self.message["content"]) - 1,
                               delta=delta, **extra))
        return b"".join(out)

    def _close_part(self) -> bytes:
        assert self.message is not None and self.part is not None
        part, self.part = self.part, None
        field, prefix = PARTS[part["type"]]
        where = {"item_id": self.message["id"], "output_index": self.output.index(self.message),
                 "content_index": len(self.message["content"]) - 1}
        extra: dict[str, Any] = {"logprobs": []} if part["type"] == "output_text" else {}
        return (self._event(prefix + ".done", **where, **{field: part[field]}, **extra)
                + self._event("response.content_part.done", **where, part=part))

    def _close_message(self, status: str) -> bytes:
        if self.message is None:
            return b""
        out = self._close_part() if self.part is not None else b""
        message, self.message = self.message, None
        message["status"] = status
        return out + self._event("response.output_item.done", output_index=self.output.index(message), item=message)

    def _call(self, delta: dict[str, Any]) -> bytes:
        out = []
        index = delta.get("index", 0)
        fn = delta.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            out.append(self._close_message("completed"))
            item = self.calls[index] = {"id": new_id("fc"), "type": "function_call",
                                        "call_id": delta.get("id") or new_id("call"), "name": fn.get("name") or "",
                                        "arguments": "", "status": "in_progress"}
            out.append(self._add_item(item))
        elif fn.get("name"):
            item["name"] += fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                   output_index=self.output.index(item), delta=fn["arguments"]))
        return b"".join(out)

    def finish(self) -> tuple[dict[str, Any], bytes]:
        """Close every open item; the final Response (send ``final(response)`` once it is stored)."""
        status, incomplete = FINISH.get(self.finish_reason, ("completed", None))
        if self.error is not None:
            status, incomplete = "failed", None
        item_status = "completed" if status == "completed" else "incomplete"
        out = [self._close_message(item_status)]
        for item in self.calls.values():
            item["status"] = item_status
            where = {"item_id": item["id"], "output_index": self.output.index(item)}
            out.append(self._event("response.function_call_arguments.done", **where, name=item["name"],
                                   arguments=item["arguments"]))
            out.append(self._event("response.output_item.done", output_index=where["output_index"], item=item))
        self.calls = {}
        error = None
        if self.error is not None:
            code = "rate_limit_exceeded" if self.error.get("code") == "rate_limit_exceeded" else "server_error"
            error = {"code": code, "message": str(self.error.get("message") or "The upstream failed.")}
        response = self._snapshot(status, usage=usage(self.usage), incomplete=incomplete, error=error)
        return response, b"".join(out)

    def final(self, response: dict[str, Any]) -> bytes:
        status = response["status"]
        if status == "failed":
            err = self.error or {}
            code, param = err.get("code") or err.get("type"), err.get("param")
            return (self._event("error", code=code if isinstance(code, str) else None,
                                message=response["error"]["message"], param=param if isinstance(param, str) else None)
                    + self._event("response.failed", response=response))
        return self._event("response.completed" if status == "completed" else "response.incomplete", response=response)
