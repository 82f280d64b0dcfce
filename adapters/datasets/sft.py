"""SFT lines in OpenAI's chat fine-tuning format.

    {"messages": [...prompt, assistant], "tools": [...], "parallel_tool_calls": bool}

The prompt is the request's messages; the assistant message is the feedback's newest
correction when there is one, else the reply. A record yields a line or the reason
it was skipped (``failed``, ``no_messages``, ``empty_reply``, ``truncated``, ``bad_tool_arguments``: a
call whose arguments are not a JSON object).
A reply cut by ``max_tokens`` (finish_reason ``length``) is skipped unless corrected:
training on it teaches the model to stop mid-sentence.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.datasets.messages import (
    correction_message,
    has_content,
    prompt_messages,
    reply_message,
    request_extras,
)


def sft_example(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``(line, "ok"|"corrected")`` or ``(None, reason)``."""
    return sft_line(row.get("status"), row.get("request"), row.get("response"),
                    row.get("correction"), row.get("finish_reason"))


def sft_line(status: Any, request: Any, response: Any, correction: Any,
             finish_reason: Any) -> tuple[dict[str, Any] | None, str]:
    """``sft_example`` on a record's decoded columns."""
    if status != 200 or not response:
        return None, "failed"
    prompt = prompt_messages(request)
    if prompt is None:
        return None, "no_messages"
    fixed = correction_message(correction) if correction is not None else None
    answer: dict[str, Any] | None
    if fixed is not None and has_content(fixed):
        answer, how = fixed, "corrected"
    else:
        answer, how = reply_message(response), "ok"
        if not has_content(answer):
            return None, "empty_reply"
        if finish_reason == "length":
            return None, "truncated"
    if not calls_parse(answer):
        return None, "bad_tool_arguments"
    return {"messages": [*prompt, answer], **request_extras(request)}, how


def calls_parse(msg: dict[str, Any]) -> bool:
    """Every tool call's ``arguments`` is a JSON object's text (what fine-tuning and the trainer read)."""
    for call in msg.get("tool_calls") or ():
        args = (call.get("function") or {}).get("arguments")
        try:
            if not isinstance(args, str) or not isinstance(json.loads(args), dict):
                return False
        except ValueError:
            return False
    return True
