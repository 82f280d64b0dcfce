"""The input messages of a stored completion, shaped as OpenAI's ``ChatCompletionMessageList``.

Each message gets a stable id ``{completion_id}-{index}`` (the cursor for ``after``).
Content given as parts is flattened to its text, with the parts in ``content_parts``.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest


def _message(completion_id: str, index: int, msg: dict[str, Any]) -> dict[str, Any]:
    content = msg.get("content")
    parts = None
    if isinstance(content, list):
        parts = [p for p in content
                 if isinstance(p, dict) and p.get("type") in ("text", "image_url")]
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict)
                          and p.get("type") == "text")
    out: dict[str, Any] = {
        "id": f"{completion_id}-{index}",
        "role": msg.get("role"),
        "content": content,
        "refusal": msg.get("refusal"),
        "content_parts": parts,
    }
    for key in ("name", "tool_calls", "tool_call_id"):
        if msg.get(key) is not None:
            out[key] = msg[key]
    return out


def stored_messages(completion_id: str, request: dict[str, Any], *, after: str | None,
                    limit: int, order: str) -> tuple[list[dict[str, Any]], bool]:
    raw = request.get("messages") or []
    items = [_message(completion_id, i, m) for i, m in enumerate(raw) if isinstance(m, dict)]
    if order == "desc":
        items.reverse()
    if after is not None:
        pos = next((i for i, m in enumerate(items) if m["id"] == after), None)
        if pos is None:
            raise InvalidRequest(f"No message with id `{after}` in this completion.", param="after")
        items = items[pos + 1:]
    return items[:limit], len(items) > limit
