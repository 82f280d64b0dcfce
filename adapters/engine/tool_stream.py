"""Tool calls streamed as they are decoded, as OpenAI streams them: for each call a first delta with its
``id``, ``type`` and ``function.name`` (``arguments`` ""), then ``function.arguments`` fragments.

Used when the reply is constrained to Hermes blocks (``tool_choice`` ``required`` or a named function:
``tools.ToolRequest.grammar``), so every block is well formed and a call can be announced as soon as
its name is written.  A call's arguments are sent as written, holding back only the text from the
last ``}`` (it may be the block's own closing brace).  With ``auto`` the model writes freely and a
block may not parse, so ``replies.sse`` holds the choice's text until it ends (``tools.parse``).

    calls = CallStream()
    deltas = calls.feed(text)     # [{"index", "id", "type", "function": {"name", "arguments"}}, ...]
    content, more = calls.flush() # at the choice's end (what a max_tokens cut left)
    calls.completed               # calls whose block closed: finish_reason "tool_calls"
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

HEAD = re.compile(r'\s*<tool_call>\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
END = re.compile(r"\}\s*</tool_call>")


class CallStream:
    def __init__(self) -> None:
        self.buf = ""
        self.index = -1  # the call being written
        self.in_args = False
        self.sent = 0  # characters of ``buf`` already sent as arguments
        self.completed = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buf += text
        out: list[dict[str, Any]] = []
        while True:
            if not self.in_args:
                head = HEAD.match(self.buf)
                if head is None:
                    return out
                self.index += 1
                out.append({"index": self.index, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                            "function": {"name": json.loads(f'"{head.group(1)}"'), "arguments": ""}})
                self.buf, self.in_args, self.sent = self.buf[head.end():], True, 0
                continue
            end = END.search(self.buf, self.sent)
            if end is None:
                held = self.buf.rfind("}", self.sent)
                out += self._args(held if held >= 0 else len(self.buf))
                return out
            out += self._args(end.start())
            self.buf, self.in_args = self.buf[end.end():], False
            self.completed += 1

    def flush(self) -> tuple[str | None, list[dict[str, Any]]]:
        """At the choice's end: ``(content, deltas)``: what is still held of a call cut short (``max_tokens``)
        as its last fragment; a reply cut before its first call's name is content (as ``tools.parse``
        leaves a reply without a whole call)."""
        if self.in_args:
            return None, self._args(len(self.buf))
        return (self.buf if self.index < 0 and self.buf.strip() else None), []

    def _args(self, upto: int) -> list[dict[str, Any]]:
        if upto <= self.sent:
            return []
        fragment, self.sent = self.buf[self.sent:upto], upto
        return [{"index": self.index, "function": {"arguments": fragment}}]
