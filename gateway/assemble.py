"""Builds the whole ``chat.completion`` from a stream's chunks, for the interaction record.

The client gets the chunks as they come; this runs beside the relay and keeps only what
the record needs: per choice the role, the text, the tool calls (merged by index), the
finish reason, and the final usage; and ``deltas``, how many content-bearing deltas came
(vLLM and the engine stream one per generated token, so a cut stream's completion tokens
are about this many; a token that completes no character yet is held back, so it may
undercount by a few).
"""

from __future__ import annotations

from typing import Any


class _Choice:
    __slots__ = ("content", "refusal", "tool_calls", "finish_reason", "role")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.role = "assistant"


class ChunkAssembler:
    """What every stream of chunks shares (chat's and the legacy completions'): the first chunk's id,
    model, created and fingerprint, the final usage, one state per choice index (``new_choice``) fed
    each choice of each chunk (``add_choice``), and ``deltas``, how many chunks carried output."""

    def __init__(self) -> None:
        self.choices: dict[int, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.upstream_id: str | None = None
        self.system_fingerprint: str | None = None
        self.deltas = 0

    def add(self, chunk: dict[str, Any]) -> None:
        if self.upstream_id is None:
            self.upstream_id = chunk.get("id")
            self.model = chunk.get("model")
            self.created = chunk.get("created")
            self.system_fingerprint = chunk.get("system_fingerprint")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for ch in chunk.get("choices") or ():
            choice = self.choices.get(ch.get("index", 0))
            if choice is None:
                choice = self.choices[ch.get("index", 0)] = self.new_choice()
            self.add_choice(choice, ch)

    def new_choice(self) -> Any:
        raise NotImplementedError

    def add_choice(self, choice: Any, ch: dict[str, Any]) -> None:
        raise NotImplementedError


class StreamAssembler(ChunkAssembler):
    def new_choice(self) -> _Choice:
        return _Choice()

    def add_choice(self, choice: _Choice, ch: dict[str, Any]) -> None:
        delta = ch.get("delta") or {}
        if delta.get("role"):
            choice.role = delta["role"]
        if delta.get("content"):
            choice.content.append(delta["content"])
            self.deltas += 1
        if delta.get("refusal"):
            choice.refusal.append(delta["refusal"])
            self.deltas += 1
        for call in delta.get("tool_calls") or ():
            self._merge_call(choice, call)
            self.deltas += 1
        if ch.get("finish_reason"):
            choice.finish_reason = ch["finish_reason"]

    @staticmethod
    def _merge_call(choice: _Choice, call: dict[str, Any]) -> None:
        slot = choice.tool_calls.setdefault(
            call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        fn = call.get("function") or {}
        if fn.get("name"):
            slot["function"]["name"] += fn["name"]
        if fn.get("arguments"):
            slot["function"]["arguments"] += fn["arguments"]

    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if 0 in self.choices else None

    def completion(self, gateway_id: str, created: int) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            c = self.choices[index]
            message: dict[str, Any] = {
                "role": c.role,
                "content": "".join(c.content) if c.content or not c.tool_calls else None,
                "refusal": "".join(c.refusal) or None,
            }
            if c.tool_calls:
                message["tool_calls"] = [c.tool_calls[i] for i in sorted(c.tool_calls)]
            choices.append({"index": index, "message": message, "finish_reason": c.finish_reason,
                            "logprobs": None})
        out: dict[str, Any] = {"id": gateway_id, "object": "chat.completion",
                               "created": self.created or created, "model": self.model,
                               "choices": choices, "usage": self.usage}
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        return out
