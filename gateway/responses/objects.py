"""The Responses API's own objects as this gateway builds them: ids, the request's first checks, the
Response object (what the request asked for echoed with OpenAI's defaults, plus the result), a
function tool and a text part as a Response shows them. The mapping to and from chat completions
is ``gateway.responses.translate``.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from gateway.errors import InvalidRequest

_ids = random.Random(os.urandom(32))


def new_id(prefix: str) -> str:
    return f"{prefix}_{_ids.getrandbits(96):024x}"


def bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as a Response echoes it (OpenAI's defaults filled in)."""
    strict = tool.get("strict")
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": True if strict is None else strict}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


# absent rather than null when not given (the spec does not make every one nullable); so is completed_at
# until the response is completed
OPTIONAL = ("max_output_tokens", "max_tool_calls", "previous_response_id", "reasoning", "safety_identifier",
            "prompt_cache_key")


def request_echo(resp_id: str, body: dict[str, Any], created_at: int) -> dict[str, Any]:
    """What a Response repeats of its request, with OpenAI's defaults, in the Response's key order (the
    result's own keys as placeholders): made once per request, filled in by ``response_object``."""
    text = body.get("text") or {}
    out: dict[str, Any] = {
        "id": resp_id, "object": "response", "created_at": created_at, "status": None, "completed_at": None,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": body["model"], "output": None,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"), "reasoning": body.get("reasoning"),
        "store": body.get("store") is not False,
        "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [function_tool(tool) for tool in body.get("tools") or ()],
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "truncation": "disabled", "metadata": body.get("metadata") or {},
        "safety_identifier": body.get("safety_identifier"), "prompt_cache_key": body.get("prompt_cache_key"),
    }
    if body.get("user") is not None:
        out["user"] = body["user"]
    for name in OPTIONAL:
        if out[name] is None:
            del out[name]
    return out


def response_object(resp_id: str, body: dict[str, Any], created_at: int, *, status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
                    incomplete: str | None = None, error: dict[str, Any] | None = None,
                    echo: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response object: what the request asked for, echoed with OpenAI's defaults (``echo``, if made
    already), plus the result."""
    out = dict(echo if echo is not None else request_echo(resp_id, body, created_at))
    out["status"] = status
    if status == "completed":
        out["completed_at"] = int(time.time())
    else:
        del out["completed_at"]
    out["error"] = error
    out["incomplete_details"] = {"reason": incomplete} if incomplete else None
    out["output"] = output
    if usage:
        out["usage"] = usage
    return out


def check_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if body.get("input") is None and body.get("previous_response_id") is None:
        raise bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    for name in ("instructions", "previous_response_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    return body
