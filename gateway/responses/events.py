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

from gateway.responses.objects import new_id, request_echo, response_object, text_part
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
        self._echo = request_echo(resp_id, body, created_at)  # the request's part of every snapshot
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.part: dict[str, Any] | None = None  # its open content part
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its open function_call item
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        # the open part's encoded place (item_id, output_index, content_index) and its delta events' bytes
        self._where = self._head = self._tail = b""

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, **fields, "sequence_number": self.seq})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        return response_object(self.resp_id, self.body, self.created_at, status=status, output=self.output,
                               echo=self._echo, **kw)

    def _raw(self, kind: bytes, fields: bytes) -> bytes:
        """``_event`` with its fields already encoded (``"name":value,...``): the same bytes."""
        self.seq += 1
        return b'event: %s\ndata: {"type":"%s",%s,"sequence_number":%d}\n\n' % (kind, kind, fields, self.seq - 1)

    def start(self) -> bytes:
        pending = b'"response":' + orjson.dumps(self._snapshot("in_progress"))  # encoded once for both events
        return self._raw(b"response.created", pending) + self._raw(b"response.in_progress", pending)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return b""
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        out = b""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer; n > 1 is refused before the call
            delta = choice.get("delta")
            if delta:
                if delta.get("refusal"):
                    out += self._text("refusal", delta["refusal"])
                if delta.get("content"):
                    out += self._text("output_text", delta["content"])
                for call in delta.get("tool_calls") or ():
                    out += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _add_item(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)

    def _text(self, kind: str, delta: str) -> bytes:
        """A text delta: its event built around the open part's encoded fields (``_open``), the same bytes
        as ``_event`` would give, only without encoding them again for every token."""
        out = b""
        if self.part is None or self.part["type"] != kind:
            out = self._open(kind)
        assert self.part is not None
        self.part[PARTS[kind][0]] += delta
        self.seq += 1
        return out + self._head + orjson.dumps(delta) + self._tail + b"%d}\n\n" % (self.seq - 1)

    def _open(self, kind: str) -> bytes:
        """Open a content part of ``kind`` (and the message, if none is open); its delta events' fixed bytes."""
        out = []
        if self.message is None:
            self.message = {"id": new_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                            "content": []}
            out.append(self._add_item(self.message))
        where = {"item_id": self.message["id"], "output_index": self.output.index(self.message)}
        if self.part is not None:
            out.append(self._close_part())
        self.part = _empty_part(kind)
        self.message["content"].append(self.part)
        self._where = b'"item_id":%s,"output_index":%d,"content_index":%d' % (
            orjson.dumps(where["item_id"]), where["output_index"], len(self.message["content"]) - 1)
        out.append(self._raw(b"response.content_part.added", self._where + b',"part":' + orjson.dumps(self.part)))
        name = (PARTS[kind][1] + ".delta").encode()
        self._head = b'event: %s\ndata: {"type":"%s",%s,"delta":' % (name, name, self._where)
        self._tail = b',"logprobs":[],"sequence_number":' if kind == "output_text" else b',"sequence_number":'
        return b"".join(out)

    def _close_part(self) -> bytes:
        assert self.message is not None and self.part is not None
        part, self.part = self.part, None
        field, prefix = PARTS[part["type"]]
        text = b',"%s":%s' % (field.encode(), orjson.dumps(part[field]))
        if part["type"] == "output_text":
            text += b',"logprobs":[]'
        return (self._raw(prefix.encode() + b".done", self._where + text)
                + self._raw(b"response.content_part.done", self._where + b',"part":' + orjson.dumps(part)))

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
