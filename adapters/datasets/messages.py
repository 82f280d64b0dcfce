"""From a logged request/reply to fine-tuning message shapes.

The log keeps the request body and the ``chat.completion`` as sent; fine-tuning files
take a narrower message shape. ``clean_message`` keeps the keys OpenAI's fine-tuning
format accepts for each role and drops reply-only fields (``refusal: null``,
``annotations``, ``audio``...).
"""

from __future__ import annotations

import copy
from typing import Any, TypeGuard

ROLES = ("system", "developer", "user", "assistant", "tool")
KEYS: dict[str, tuple[str, ...]] = {
    "system": ("role", "content", "name"),
    "developer": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "name", "tool_calls", "weight"),
    "tool": ("role", "content", "tool_call_id"),
}


def clean_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"id": call.get("id"), "type": call.get("type", "function"),
            "function": {"name": fn.get("name"), "arguments": fn.get("arguments")}}


def clean_message(msg: dict[str, Any]) -> dict[str, Any]:
    role = msg.get("role")
    # unknown roles (or a role that is not a string) pass through; the validator names them
    keep = KEYS.get(role, tuple(msg)) if isinstance(role, str) else tuple(msg)
    out = {}
    for k in keep:
        v = msg.get(k)
        if v is not None:  # strings are immutable; lists/dicts are copied (scrubbing edits them)
            out[k] = copy.deepcopy(v) if isinstance(v, (list, dict)) else v
    if role == "assistant":
        if out.get("tool_calls"):
            out["tool_calls"] = [clean_tool_call(c) for c in out["tool_calls"]]
            out.setdefault("content", None)
        else:
            out.pop("tool_calls", None)
    return out


def prompt_messages(request: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    msgs = (request or {}).get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        return None
    return [clean_message(m) for m in msgs]


def has_content(msg: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    if not msg:
        return False
    content = msg.get("content")
    if isinstance(content, str) and content.strip():
        return True
    if isinstance(content, list) and any(
            isinstance(p, dict) and str(p.get("text", "")).strip() for p in content):
        return True
    return bool(msg.get("tool_calls"))


def reply_message(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """The reply's assistant message (first choice), cleaned; None when there is none."""
    choices = (response or {}).get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        return None
    return clean_message({**msg, "role": "assistant"})


def correction_message(correction: Any) -> dict[str, Any] | None:
    if isinstance(correction, str):
        correction = {"role": "assistant", "content": correction}
    if not isinstance(correction, dict):
        return None
    return clean_message({**correction, "role": "assistant"})


def request_extras(request: dict[str, Any] | None) -> dict[str, Any]:
    """``tools`` and ``parallel_tool_calls`` as the request had them."""
    out: dict[str, Any] = {}
    req = request or {}
    if req.get("tools"):
        out["tools"] = req["tools"]
    if isinstance(req.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = req["parallel_tool_calls"]
    return out
