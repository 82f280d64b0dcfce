"""The interaction page's feedback form as a ``POST /v1/feedback`` body: rating, comment, tags and the
correction, which is text, tool calls, or both (the API's correction message).

The correction box starts from the newest correction, else the reply. A reply that called tools (or a
request that offered them) also gets a tool-calls box: a JSON list of ``{"name": ..., "arguments": {...}}``,
one per call (arguments as an object, or as the string the model wrote). Saving sends only what changed:
edited text alone stays a text correction, unless the reply's tool calls are kept beside it; edited tool calls
make a correction message ``{"role": "assistant", "content": text or null, "tool_calls": [...]}``, and an
emptied list a text-only correction (the reply should not have called a tool). A list that does not parse is
a 400 on the page, with what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.console import views
from gateway.errors import InvalidRequest

MAX_CALLS = 128  # as POST /v1/feedback


def baseline(summary: dict[str, Any], replies: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """What the boxes start with: the newest correction's text and tool calls, else the reply's."""
    found = summary["correction"]
    if found is not None:
        message = found if isinstance(found, dict) else {"content": found}
        return views.correction_text(found), _plain(views.bubble(message)["calls"])
    if not replies:
        return "", []
    return str(replies[0]["text"]), _plain(replies[0]["calls"])


def boxes(summary: dict[str, Any], replies: list[dict[str, Any]], request: dict[str, Any] | None,
          ) -> dict[str, Any]:
    """The template's values: ``correction``, ``tool_calls`` (None: no tool-calls box)."""
    text, calls = baseline(summary, replies)
    offered = bool((request or {}).get("tools"))
    return {"correction": text, "tool_calls": tool_calls_text(calls) if calls or offered else None}


def tool_calls_text(calls: list[dict[str, Any]]) -> str:
    return json.dumps(calls, indent=2, ensure_ascii=False)


def _plain(calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Bubble calls as the box shows them: arguments parsed when they are JSON."""
    out = []
    for call in calls:
        try:
            arguments: Any = json.loads(call["arguments"])
        except ValueError:
            arguments = call["arguments"]
        out.append({"name": call["name"], "arguments": arguments})
    return out


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """The box's JSON as the API's ``tool_calls`` (400 with the reason when it is not a list of calls)."""
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"Tool calls: {why}. Write a JSON list of "
                              '{"name": "...", "arguments": {...}}, one per call.', param="correction")

    try:
        calls = json.loads(text) if text.strip() else []
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(calls, list) or len(calls) > MAX_CALLS:
        raise bad(f"not a list of at most {MAX_CALLS}")
    out = []
    for i, call in enumerate(calls):
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise bad(f"call {i + 1} has no name")
        arguments = call.get("arguments", {})
        text_args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        out.append({"type": "function", "function": {"name": name.strip(), "arguments": text_args}})
    return out


def feedback_body(form: dict[str, str], row: dict[str, Any]) -> dict[str, Any] | None:
    """A ``POST /v1/feedback`` body of what the form changed (None: nothing did)."""
    summary, body = row["feedback"], {"completion_id": row["id"]}
    if form.get("rating") in ("1", "-1"):
        body["rating"] = float(form["rating"])
    correction = _correction(form, *baseline(summary, views.replies(row["response"])))
    if correction is not None:
        body["correction"] = correction
    if "comment" in form and form["comment"] != (summary["comment"] or ""):
        body["comment"] = form["comment"]
    tags = [t.strip() for t in form.get("tags", "").split(",") if t.strip()]
    if "tags" in form and tags != (summary["tags"] or []):
        body["tags"] = tags
    return body if len(body) > 1 else None


def written(form: dict[str, str]) -> Any:
    """The correction the boxes hold, whole (the review queue's edit: what the reply should have been)."""
    text = form.get("correction", "").replace("\r\n", "\n")
    calls = parse_tool_calls(form["tool_calls"]) if "tool_calls" in form else []
    if calls:
        return {"role": "assistant", "content": text if text.strip() else None, "tool_calls": calls}
    if not text.strip():
        raise InvalidRequest("An empty correction is not saved: write the reply it should have given.",
                             param="correction")
    return text


def _correction(form: dict[str, str], text_was: str, calls_was: list[dict[str, Any]]) -> Any:
    text = form.get("correction", "").replace("\r\n", "\n")
    kept = parse_tool_calls(tool_calls_text(calls_was))  # the reply's calls as the API takes them
    if "tool_calls" in form and (calls := parse_tool_calls(form["tool_calls"])) != kept:
        if calls:
            return {"role": "assistant", "content": text if text.strip() else None, "tool_calls": calls}
        if not text.strip():
            raise InvalidRequest("A correction needs text or a tool call.", param="correction")
        return text  # the calls removed: the reply should have been this text
    if not text.strip() or text == text_was:
        return None
    return {"role": "assistant", "content": text, "tool_calls": kept} if kept else text  # calls kept beside it
