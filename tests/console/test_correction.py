"""The interaction page's feedback form as a POST /v1/feedback body (gateway.console.correction): text,
tool calls or both; only what changed is sent; what does not parse is a 400 naming the correction."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.console import correction, views
from gateway.errors import InvalidRequest

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"order": 7}'}}


def _row(message: dict[str, Any], previous: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "response": {"choices": [{"message": message}]},
            "feedback": {"correction": previous, "comment": None, "tags": None}}


def _form(row: dict[str, Any], **changes: str) -> dict[str, str]:
    """The form as the page renders it for ``row``, with ``changes`` typed in."""
    shown = correction.boxes(row["feedback"], views.replies(row["response"]), {"tools": [{}]})
    return {"correction": shown["correction"], "tool_calls": shown["tool_calls"], **changes}


def test_only_what_changed_is_sent() -> None:
    called = _row({"role": "assistant", "content": None, "tool_calls": [CALL]})
    assert correction.feedback_body(_form(called), called) is None  # nothing typed
    assert json.loads(_form(called)["tool_calls"]) == [{"name": "lookup_order", "arguments": {"order": 7}}]

    text_only = correction.feedback_body(_form(called, correction="Let me look that up."), called)
    assert text_only is not None
    assert text_only["correction"] == {"role": "assistant", "content": "Let me look that up.", "tool_calls": [
        {"type": "function", "function": {"name": "lookup_order", "arguments": '{"order": 7}'}}]}  # calls kept

    other = correction.feedback_body(_form(called, tool_calls='[{"name": "refund", "arguments": "raw text"}]'), called)
    assert other is not None
    assert other["correction"] == {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "refund", "arguments": "raw text"}}]}

    no_call = correction.feedback_body(_form(called, tool_calls="[]", correction="Order 7 ships today."), called)
    assert no_call is not None and no_call["correction"] == "Order 7 ships today."  # should not have called


def test_a_text_reply_and_the_newest_correction_start_the_boxes() -> None:
    plain = _row({"role": "assistant", "content": "Hello"})
    assert correction.feedback_body(_form(plain, correction="Hi there"), plain)["correction"] == "Hi there"
    corrected = _row({"role": "assistant", "content": "Hello"}, previous={"role": "assistant", "content": None,
                                                                          "tool_calls": [CALL]})
    assert correction.boxes(corrected["feedback"], [], None) == {
        "correction": "", "tool_calls": json.dumps([{"name": "lookup_order", "arguments": {"order": 7}}], indent=2)}
    assert correction.boxes({"correction": None}, [], None) == {"correction": "", "tool_calls": None}


@pytest.mark.parametrize(("typed", "why"), [
    ('[{"name": "x",', "not JSON"), ('{"name": "x"}', "not a list"), ('[{"arguments": {}}]', "call 1 has no name"),
    ('[{"name": " "}]', "call 1 has no name")])
def test_what_does_not_parse_is_a_400(typed: str, why: str) -> None:
    called = _row({"role": "assistant", "content": None, "tool_calls": [CALL]})
    with pytest.raises(InvalidRequest, match=why) as err:
        correction.feedback_body(_form(called, tool_calls=typed), called)
    assert err.value.param == "correction"


def test_an_empty_correction_is_refused() -> None:
    called = _row({"role": "assistant", "content": None, "tool_calls": [CALL]})
    with pytest.raises(InvalidRequest, match="needs text or a tool call"):
        correction.feedback_body(_form(called, tool_calls="[]"), called)
    with pytest.raises(InvalidRequest, match="empty correction"):
        correction.written({"correction": " ", "tool_calls": "[]"})
    assert correction.written({"correction": "", "tool_calls": '[{"name": "x"}]'})["tool_calls"][0]["function"] == {
        "name": "x", "arguments": "{}"}
