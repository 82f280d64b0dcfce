"""A tool-calling conversation in a training file trains the format the engine serves: the prompt the
trainer renders is the engine's prompt for the same request, token for token, and the loss falls on the
call exactly as the constrained decoder writes it (compact JSON) and on the answer after its result."""

from __future__ import annotations

import asyncio

from adapters.datasets.tokens import load_local_tokenizer
from adapters.engine.template import ChatTemplate
from adapters.training.data import IGNORE, sft_example
from tests.fixtures.engine import test_home as engine_home

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
ASK = {"role": "user", "content": "Where is order 7?"}
CALL = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
    "name": "lookup_order", "arguments": '{"order_id": "7"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"eta": "Friday"}'}
ANSWER = {"role": "assistant", "content": "It ships Friday."}


def _spans(ids: list[int], labels: list[int]) -> list[list[int]]:
    spans: list[list[int]] = []
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        if lab == IGNORE:
            continue
        if not spans or labels[i - 1] == IGNORE:
            spans.append([])
        spans[-1].append(t)
    return spans


def test_a_tool_call_line_trains_the_served_format() -> None:
    tok = load_local_tokenizer(engine_home())
    ex = sft_example(tok, {"tools": TOOLS, "messages": [ASK, CALL, RESULT, ANSWER]}, 4096)
    trained = [tok.decode(s) for s in _spans(ex.input_ids, ex.labels)]
    assert trained == ['<tool_call>\n{"name":"lookup_order","arguments":{"order_id":"7"}}\n</tool_call>\n<|im_end|>\n',
                       "It ships Friday.<|im_end|>\n"], trained  # each turn with its end-of-turn marker

    chat = ChatTemplate(tok, 8192)
    source, ctx, cont = chat.context([ASK], None, None, True, False, False, TOOLS)
    served = asyncio.run(chat.encode(source, ctx, cont))
    first = ex.labels.index(next(lab for lab in ex.labels if lab != IGNORE))
    assert ex.input_ids[:first] == served  # the engine's prompt for the same request, token for token


def test_a_line_without_tools_renders_as_before() -> None:
    tok = load_local_tokenizer(engine_home())
    ex = sft_example(tok, {"messages": [ASK, ANSWER]}, 4096)
    assert tok.decode(ex.input_ids) == tok.apply_chat_template([ASK, ANSWER], tokenize=False)
