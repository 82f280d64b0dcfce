"""A ``POST /v1/responses`` passed through to a target that serves the Responses API itself.

What goes upstream is the request as sent, but for what this gateway keeps itself:

    model ................. the route's model (as for chat)
    store ................. false: the gateway stores the response (``gateway.store.responses``) under
                            its own id; the upstream keeps nothing
    previous_response_id .. left out, and ``input`` is the whole conversation: the stored items of every
                            earlier turn (messages, function calls and their outputs; reasoning items
                            only with ``encrypted_content``, since the upstream kept none; built-in tool
                            calls left out: their results are in the messages after them), then this
                            request's input as sent

Fields the translation onto chat refuses are sent as they are where the reply stays ours to store,
replay and log: built-in tools that run upstream (``SERVER_TOOLS``), ``include``, ``reasoning``
summaries, ``top_logprobs``, ``truncation``, ``max_tool_calls``, ``prompt_cache_retention`` /
``_options``, ``moderation``, ``stream_options`` (obfuscation included), ``reasoning`` input items,
and any field this gateway does not know (the target answers for it; the OpenAI SDK sends only
the fields it knows). ``REFUSED`` stays a 400: a ``background`` response (the upstream would hold
it, not us), ``conversation`` (the upstream's state, not ours), ``prompt`` (a template stored
upstream: the log would not hold the prompt), ``context_management`` (compaction items), and tools
whose calls the client runs and answers with items other than ``function_call_output``.

The reply comes back as the upstream sent it, with the gateway's id (``resp_...``), ``store`` and
``previous_response_id`` in place of the upstream's (``shown``), in every event that carries the
Response too. ``ResponseAssembler`` follows a stream for the record.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import clip
from gateway.responses.objects import bad
from gateway.responses.translate import max_output_tokens_field, to_completion

SERVER_TOOLS = frozenset({"function", "file_search", "web_search", "web_search_2025_08_26", "web_search_preview",
                          "web_search_preview_2025_03_11", "code_interpreter", "image_generation"})
REFUSED = {
    "background": "Background responses are not supported: omit 'background' or set it false.",
    "conversation": "The Conversations API is not supported by this gateway: use previous_response_id.",
    "prompt": "Prompt templates are not supported by this gateway: send the instructions and input.",
    "context_management": "Context management is not supported by this gateway.",
}
HISTORY = ("message", "function_call", "function_call_output")


def check(body: dict[str, Any]) -> None:
    """400 for what a passed-through request cannot carry (above)."""
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False):
            raise bad(why, name)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in SERVER_TOOLS or tool.get("defer_loading"):
            raise bad(f"Tool type {clip(kind)} is not supported here: function tools and the built-in tools that "
                      f"run upstream ({', '.join(sorted(SERVER_TOOLS - {'function'}))}) are.", f"tools[{i}].type")
    if body.get("max_output_tokens") is not None:
        max_output_tokens_field(body["max_output_tokens"])  # an integer of at least 1 (the limits count it)


def _kept(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    return kind in HISTORY or (kind == "reasoning" and bool(item.get("encrypted_content")))


def upstream_body(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The body the target gets (its ``model`` set per route by the routed path)."""
    up = {k: v for k, v in body.items() if k != "previous_response_id"}
    up["store"] = False
    if history:
        given = body.get("input")
        given = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
        up["input"] = [*(item for item in history if _kept(item)), *given]
    return up


def shown(response: dict[str, Any], resp_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The upstream's Response as the client sees it: the gateway's id, ``store``, ``previous_response_id``."""
    return {**response, "id": resp_id, "store": body.get("store") is not False,
            "previous_response_id": body.get("previous_response_id")}


def frame(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


DELTAS = ("response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta")


class ResponseAssembler:
    """Follows a Responses stream for the record: the last Response seen (the final one, once it came),
    the output items as they grew (a stream cut short), ``deltas`` (the text pieces relayed)."""

    def __init__(self) -> None:
        self.upstream_id: str | None = None
        self.response: dict[str, Any] | None = None  # the upstream's latest snapshot
        self.items: dict[int, dict[str, Any]] = {}  # output_index -> the item so far
        self.deltas = 0
        self.seq = -1  # the last sequence_number relayed
        self.held: dict[str, Any] | None = None  # the final event, held back until the response is stored

    def add(self, event: dict[str, Any]) -> None:
        self.seq = event.get("sequence_number", self.seq + 1)
        kind = event.get("type")
        if isinstance(event.get("response"), dict):
            self.response = event["response"]
            self.upstream_id = self.upstream_id or self.response.get("id")
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self.items[event.get("output_index", 0)] = dict(event.get("item") or {})
        elif kind == "response.content_part.added":
            self._part(event)
        elif kind in DELTAS:
            self.deltas += 1
            self._grow(event)

    def _grow(self, event: dict[str, Any]) -> None:
        item = self.items.get(event.get("output_index", 0))
        if item is None:
            return
        if event["type"] == "response.function_call_arguments.delta":
            item["arguments"] = (item.get("arguments") or "") + event.get("delta", "")
            return
        parts = self._part(event)
        index = event.get("content_index", 0)
        field = "refusal" if event["type"] == "response.refusal.delta" else "text"
        parts[index] = {**parts[index], field: (parts[index].get(field) or "") + event.get("delta", "")}

    def _part(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The content parts of the event's item, its part in place (``content_part.added``'s, or empty)."""
        item = self.items.setdefault(event.get("output_index", 0), {"type": "message", "role": "assistant"})
        parts = item["content"] = list(item.get("content") or [])
        index = event.get("content_index", 0)
        while len(parts) <= index:
            parts.append({"type": "output_text", "text": "", "annotations": []})
        if "part" in event:
            parts[index] = dict(event["part"])
        return parts

    def final(self) -> dict[str, Any]:
        """The Response: the final one, or the last snapshot with the output relayed so far."""
        response = dict(self.response or {})
        if response.get("status") in (None, "in_progress", "queued"):
            response["output"] = [self.items[i] for i in sorted(self.items)]
        return response

    def completion(self, completion_id: str, created: int) -> dict[str, Any]:
        return to_completion(self.final(), completion_id, created)
