"""Response items: the request's ``input`` normalised, and items as chat messages.

    items = input_items(body["input"])      # each with an id and a status, as input_items lists them
    messages = to_messages(items)           # chat completion messages

Normalised shapes (what is stored, listed by ``GET /v1/responses/{id}/input_items`` and
replayed by ``previous_response_id``):

    {"id": "msg_…", "type": "message", "role": "user"|"system"|"developer", "status": "completed",
     "content": [{"type": "input_text", "text": …}]}
    {"id": "msg_…", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": …, "annotations": [], "logprobs": []}, {"type": "refusal", …}]}
    {"id": "fc_…", "type": "function_call", "call_id": …, "name": …, "arguments": …, "status": "completed"}
    {"id": "fco_…", "type": "function_call_output", "call_id": …, "output": …, "status": "completed"}

A string input is one user message. Other item types (item references, built-in tool calls) and
content other than text (images, files, audio) are a 400 naming the item, but for ``reasoning``
items sent to a target that serves the Responses API (``passthrough``): kept as sent. Items that
are not a message, a function call or its output (reasoning, a passed-through response's built-in
tool calls) are no chat message: ``to_messages`` leaves them out.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import clip
from gateway.responses.objects import bad, new_id, text_part

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text")


def input_items(value: Any, passthrough: bool = False) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, "input")]
    if not isinstance(value, list):
        raise bad("Invalid type for 'input': expected a string or an array of items.", "input", "invalid_type")
    return [_item(item, f"input[{i}]", passthrough) for i, item in enumerate(value)]


def _item(item: Any, where: str, passthrough: bool) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = item.get("type", "message")
    if kind == "message":
        return _message(item, where)
    if kind == "reasoning" and passthrough:
        return dict(item)
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise bad(f"Missing required parameter: '{where}.{name}'.", f"{where}.{name}",
                          "missing_required_parameter")
        return {"id": _id(item, "fc"), "type": kind, "call_id": item["call_id"], "name": item["name"],
                "arguments": item["arguments"], "status": "completed"}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise bad(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id",
                      "missing_required_parameter")
        output = item.get("output")
        if not isinstance(output, str):
            output = [{"type": "input_text", "text": text} for text in _texts(output, f"{where}.output")]
        return {"id": _id(item, "fco"), "type": kind, "call_id": item["call_id"], "output": output,
                "status": "completed"}
    raise bad(f"Input items of type {clip(kind)} are not supported here: only message, function_call and "
              "function_call_output are (and reasoning, for a target that serves the Responses API).",
              f"{where}.type")


def _id(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else new_id(prefix)


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise bad(f"Invalid value for '{where}.role': {clip(role)} is not one of {list(ROLES)}.", f"{where}.role")
    content = item.get("content")
    if role == "assistant":
        parts = [text_part(text) for text in _texts(content, f"{where}.content", allow_refusal=True)]
        refusals = [p for p in content if isinstance(p, dict) and p.get("type") == "refusal"] \
            if isinstance(content, list) else []
        parts += [{"type": "refusal", "refusal": p.get("refusal") or ""} for p in refusals]
    else:
        parts = [{"type": "input_text", "text": text} for text in _texts(content, f"{where}.content")]
    return {"id": _id(item, "msg"), "type": "message", "role": role, "status": "completed", "content": parts}


def _texts(content: Any, where: str, allow_refusal: bool = False) -> list[str]:
    """The text of a content string or list of text parts (anything else is a 400)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad(f"Invalid type for '{where}': expected a string or an array of content parts.", where,
                  "invalid_type")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif not (allow_refusal and kind == "refusal"):
            raise bad(f"Content of type {clip(kind)} is not supported here: only text is.", f"{where}[{j}].type")
    return texts


def _chat_content(texts: list[str]) -> str | list[dict[str, Any]]:
    return texts[0] if len(texts) == 1 else [{"type": "text", "text": text} for text in texts]


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalised items as chat messages; function calls join the assistant message just before them."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else
                             _chat_content([p["text"] for p in output])})
        elif kind != "message":
            continue  # reasoning, built-in tool calls: nothing a chat message carries
        elif item["role"] == "assistant":
            texts = [p["text"] for p in item["content"] if p["type"] == "output_text"]
            refusal = "".join(p["refusal"] for p in item["content"] if p["type"] == "refusal")
            message: dict[str, Any] = {"role": "assistant", "content": _chat_content(texts) if texts else None}
            if refusal:
                message["refusal"] = refusal
            messages.append(message)
        else:
            messages.append({"role": item["role"], "content": _chat_content([p["text"] for p in item["content"]])})
    return messages
