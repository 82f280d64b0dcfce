"""Tool calling through the real engine and the openai SDK: ``tool_choice`` required and named (constrained,
so even SmolLM2-135M calls correctly), streamed and not; a conversation that carries the call and its
result back; ``auto`` refused without ``--enable-auto-tool-choice`` as in vLLM; the Hermes parser."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from adapters.engine.tools import HERMES_TEMPLATE, parse

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Where is my order 4411?"}]
LOOKUP = {"type": "object", "properties": {"order_id": {"type": "string", "maxLength": 12}},
          "required": ["order_id"], "additionalProperties": False}
TICKET = {"type": "object", "properties": {"priority": {"enum": ["low", "high"]}, "summary":
                                           {"type": "string", "maxLength": 40}},
          "required": ["priority", "summary"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order",
                                           "parameters": LOOKUP}},
         {"type": "function", "function": {"name": "open_ticket", "description": "Open a support ticket",
                                           "parameters": TICKET}}]
SCHEMAS = {"lookup_order": LOOKUP, "open_ticket": TICKET}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)


def _check(calls) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_calls_a_tool_with_valid_arguments(client) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                               temperature=0.8, seed=seed, max_tokens=120)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
        _check(choice.message.tool_calls)


def test_a_named_function_is_the_one_called(client) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "open_ticket"}})
    calls = reply.choices[0].message.tool_calls
    _check(calls)
    assert [c.function.name for c in calls] == ["open_ticket"]


def test_streamed_tool_calls_assemble_like_openais(client) -> None:
    """A constrained call streams as it is written (a first delta with id and name, then argument
    fragments), and assembles into the call the same request gets unstreamed."""
    calls: dict[int, dict[str, str]] = {}
    finish, fragments = None, 0
    for chunk in client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                temperature=0, max_tokens=120, stream=True,
                                                parallel_tool_calls=False):
        if not chunk.choices:
            continue
        for part in chunk.choices[0].delta.tool_calls or []:
            if part.id:
                assert part.function.name and part.function.arguments == ""  # announced before its arguments
            else:
                fragments += 1
            slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += part.id or ""
            slot["name"] += (part.function.name or "") if part.function else ""
            slot["arguments"] += (part.function.arguments or "") if part.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls
    for slot in calls.values():
        assert slot["id"].startswith("call_")
        jsonschema.validate(json.loads(slot["arguments"]), SCHEMAS[slot["name"]])
    assert fragments > 1  # not one delta at the end
    plain = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           temperature=0, max_tokens=120, parallel_tool_calls=False)
    assert [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls] == \
        [(s["name"], s["arguments"]) for s in calls.values()]


def test_the_call_and_its_result_go_back_to_the_model(client) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, max_tokens=120,
                                           tool_choice={"type": "function", "function": {"name": "lookup_order"}})
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped", "eta": "Friday"}'}]
    short = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                           max_tokens=4)
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, tool_choice="none",
                                           max_tokens=4)
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    assert reply.usage.prompt_tokens > short.usage.prompt_tokens + 20  # the call and its result are in the prompt


def test_auto_needs_the_engine_flag_as_in_vllm(client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=4)
    assert err.value.body["param"] == "tool_choice" and "--enable-auto-tool-choice" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=4,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert err.value.body["param"] == "tool_choice"


def test_hermes_parser() -> None:
    content, calls = parse('Let me check.\n<tool_call>\n{"name": "lookup_order", "arguments": {"order_id": "7"}}\n'
                           '</tool_call>\n<tool_call>\n{"name": "open_ticket", "arguments": {"priority": "low", '
                           '"summary": "late"}}\n</tool_call>')
    assert content == "Let me check."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("lookup_order", {"order_id": "7"}), ("open_ticket", {"priority": "low", "summary": "late"})]
    assert parse("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    assert parse("just text") == ("just text", [])


def test_the_hermes_template_renders_tools_calls_and_results() -> None:
    from adapters.engine.jinja_sandbox import render

    text = render(HERMES_TEMPLATE, {"tools": TOOLS, "add_generation_prompt": True, "messages": [
        {"role": "system", "content": "Be brief."}, *ASK,
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "lookup_order", "arguments": '{"order_id": "4411"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"}]}, 2.0, 100_000)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou are a function calling AI model.")
    assert '"name": "open_ticket"' in text and text.count("<|im_start|>system") == 1
    assert '<tool_call>\n{"name":"lookup_order","arguments":{"order_id": "4411"}}\n</tool_call>' in text
    assert "<tool_response>\nshipped\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_auto_with_the_flags_reads_whatever_calls_the_model_writes(tmp_path) -> None:
    """``tuneloop engine --enable-auto-tool-choice --tool-call-parser hermes``: ``auto`` is served (the small
    model may answer in prose or call; whichever, the reply is well formed); the flag alone is refused."""
    from tests.fixtures.base_models import start_engine_process, wait_healthy
    from tests.fixtures.engine import test_home

    bad, _, log = start_engine_process(["--enable-auto-tool-choice"], test_home(), "engine-auto-bad.log")
    assert bad.wait(timeout=120) != 0 and "--tool-call-parser" in log.read_text()
    proc, url, log = start_engine_process(["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                           "--threads", "1"], test_home(), "engine-auto.log")
    try:
        wait_healthy(proc, url, log)
        auto = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        reply = auto.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, max_tokens=60)
        choice = reply.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert all(c.function.name in SCHEMAS for c in choice.message.tool_calls)
        else:
            assert choice.message.content and choice.finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_eval_scores_tool_calls_and_schema_validity(engine_server) -> None:
    """``tuneloop eval``'s runner on lines in OpenAI's fine-tuning format with ``tools``: the right function
    with arguments equal as JSON scores 1, the wrong function 0 (its name too); a structured reply is
    checked against its schema."""
    from adapters.evaluation import calls
    from adapters.evaluation.data import from_line
    from adapters.evaluation.runner import evaluate

    only = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
        "type": "object", "properties": {"order_id": {"enum": ["4411"]}}, "required": ["order_id"],
        "additionalProperties": False}}}, TOOLS[1]]
    named = {"type": "function", "function": {"name": "lookup_order"}}

    def line(name: str, args: str) -> dict:
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}
        return {"messages": [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}],
                "tools": only, "tool_choice": named, "parallel_tool_calls": False}

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema, "strict": True}}
    examples = [from_line(line("lookup_order", '{ "order_id": "4411" }')),  # equal as JSON, not as text
                from_line(line("lookup_order", '{"order_id": "9"}')),  # the right function, wrong arguments
                from_line(line("open_ticket", '{"priority": "low", "summary": "x"}')),  # the wrong function
                from_line({"messages": ASK, "response_format": fmt})]
    result = evaluate(engine_server.base_url, {"engine": MODEL}, examples, max_tokens=40, progress=False)
    outcomes = result.arms["engine"].outcomes
    assert [(o.tool_calls, o.tool_name) for o in outcomes] == [(1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (None, None)]
    assert outcomes[3].schema_valid == 1.0 and outcomes[0].schema_valid is None
    summary = result.summaries()["engine"]
    assert summary["tool_calls"] == pytest.approx(1 / 3) and summary["tool_name"] == pytest.approx(2 / 3)
    assert result.metric == "task" and summary["task"] == pytest.approx(1 / 3)  # a right call is the task check
    assert calls.schema_valid(fmt, '{"ok": "yes"}') == 0.0 and calls.schema_valid(fmt, "ok") == 0.0
