"""POST /v1/responses (OpenAI's Responses API) through the real gateway and the real `openai` SDK,
translated onto the chat path against the fake upstream; every body and stream event checked
against OpenAI's spec. Stored responses, conversations (previous_response_id), tools, refusals."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.sse import SSEParser
from tests.fixtures.gateway import received
from tests.spec import validate

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}, "strict": True}
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent", "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent", "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent", "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent", "error": "ResponseErrorEvent",
}


def create(gateway, **body: Any) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/responses", json=body, timeout=10)


def created(gateway, **body: Any) -> dict[str, Any]:
    r = create(gateway, **body)
    assert r.status_code == 200, r.text
    validate("Response", r.json())
    return r.json()


def events(gateway, **body: Any) -> list[dict[str, Any]]:
    """The raw stream's events, each checked against its schema (and the ResponseStreamEvent union)."""
    parser, out = SSEParser(), []
    with httpx.stream("POST", f"{gateway.base_url}/responses", json={**body, "stream": True}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for piece in r.iter_bytes():
            out += [orjson.loads(data) for data in parser.feed(piece)]
    for event in out:
        validate(EVENT_SCHEMAS[event["type"]], event)
        validate("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def last_messages(fake_upstream) -> list[dict[str, Any]]:
    return received(fake_upstream)[-1]["body"]["messages"]


def test_string_input_with_the_sdk(gateway, fake_upstream, upstream_requests):
    client = gateway.client()
    raw = client.responses.with_raw_response.create(model="lora-bot", input="hello there", temperature=0.5,
                                                    max_output_tokens=50, metadata={"team": "a"}, user="u-1")
    body = raw.http_response.json()
    validate("Response", body)
    response = raw.parse()
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert raw.headers["x-request-id"].startswith("chatcmpl-")  # the logged chat completion
    assert body["usage"] == {"input_tokens": 2, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}
    assert body["metadata"] == {"team": "a"} and body["temperature"] == 0.5 and body["store"] is True
    sent = received(fake_upstream)[-1]["body"]
    assert sent["messages"] == [{"role": "user", "content": "hello there"}]
    assert {k: sent[k] for k in ("temperature", "max_tokens", "metadata", "user")} == {
        "temperature": 0.5, "max_tokens": 50, "metadata": {"team": "a"}, "user": "u-1"}


def test_items_input_and_instructions(gateway, fake_upstream, upstream_requests):
    body = created(gateway, model="lora-bot", instructions="Be brief.", input=[
        {"role": "developer", "content": [{"type": "input_text", "text": "Answer in French."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "part one"},
                                                         {"type": "input_text", "text": "part two"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]},
        {"role": "user", "content": "bonjour"}])
    assert body["instructions"] == "Be brief."
    assert last_messages(fake_upstream) == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "bonjour"}]


def test_stream_events_in_order_and_the_sdk_helper(gateway):
    out = events(gateway, model="lora-bot", input="one two three four five")
    kinds = [e["type"] for e in out]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * deltas, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    done = out[-1]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] == 6
    assert out[-4]["text"] == "echo: one two three four five" == done["output"][0]["content"][0]["text"]

    with gateway.client().responses.stream(model="lora-bot", input="streamed hello") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == "echo: streamed hello"
    assert gateway.client().responses.retrieve(final.id).output_text == "echo: streamed hello"


def test_retrieve_input_items_and_delete(gateway):
    client = gateway.client()
    response = client.responses.create(model="lora-bot", input=[
        {"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
        {"role": "user", "content": "second"}])
    got = httpx.get(f"{gateway.base_url}/responses/{response.id}").json()
    validate("Response", got)
    assert got["output"] == response.model_dump(mode="json", exclude_unset=True)["output"]
    page = httpx.get(f"{gateway.base_url}/responses/{response.id}/input_items").json()
    validate("ResponseItemList", page)
    assert [i["content"][0]["text"] for i in page["data"]] == ["second", "first", "sys"]  # desc by default
    asc = client.responses.input_items.list(response.id, order="asc", limit=2)
    assert [i.content[0].text for i in asc.data] == ["sys", "first"] and asc.has_more
    rest = client.responses.input_items.list(response.id, order="asc", after=asc.last_id)
    assert [i.content[0].text for i in rest.data] == ["second"] and not rest.has_more

    deleted = httpx.delete(f"{gateway.base_url}/responses/{response.id}")
    assert deleted.json() == {"id": response.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_three_turns_with_previous_response_id(gateway, fake_upstream, upstream_requests):
    client = gateway.client()
    r1 = client.responses.create(model="lora-bot", input="one", instructions="first turn only")
    r2 = client.responses.create(model="lora-bot", input="two", previous_response_id=r1.id)
    assert last_messages(fake_upstream) == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"}]  # instructions are not carried over
    r3 = client.responses.create(model="lora-bot", input="three", previous_response_id=r2.id)
    assert r3.previous_response_id == r2.id and r3.output_text == "echo: three"
    assert last_messages(fake_upstream) == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"}]
    unstored = client.responses.create(model="lora-bot", input="x", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="lora-bot", input="y", previous_response_id=unstored.id)
    assert err.value.param == "previous_response_id"


def test_function_tool_round_trip(gateway, fake_upstream, upstream_requests):
    client = gateway.client()
    first = created(gateway, model="tools-bot", input="weather in Paris?", tools=[TOOL], tool_choice="auto")
    call = first["output"][0]
    assert call["type"] == "function_call" and call["call_id"] == "call_abc123"
    assert call["name"] == "get_weather" and call["arguments"] == '{"city": "Paris"}'
    sent = received(fake_upstream)[-1]["body"]
    assert sent["tools"] == [{"type": "function", "function": {k: TOOL[k] for k in (
        "name", "description", "parameters", "strict")}}] and sent["tool_choice"] == "auto"
    assert first["tools"] == [TOOL]

    second = client.responses.create(model="lora-bot", previous_response_id=first["id"], tools=[TOOL], input=[
        {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'}])
    assert last_messages(fake_upstream) == [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_abc123", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp": 21}'}]
    assert second.status == "completed"
    items = client.responses.input_items.list(second.id).data
    assert [i.type for i in items] == ["function_call_output"]

    streamed = events(gateway, model="tools-bot", input="weather?", tools=[TOOL])
    kinds = [e["type"] for e in streamed]
    assert kinds[2] == "response.output_item.added" and streamed[2]["item"]["type"] == "function_call"
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in streamed if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city": "Paris"}' and kinds[-2:] == ["response.output_item.done",
                                                                       "response.completed"]


def test_cut_by_max_output_tokens_is_incomplete(gateway):
    body = created(gateway, model="length-bot", input="long story", max_output_tokens=3)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert created(gateway, model="length-bot", input="long story", max_output_tokens=3.0)["status"] == "incomplete"
    out = events(gateway, model="length-bot", input="long story", max_output_tokens=3)
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_failure_mid_stream_is_response_failed(gateway):
    out = events(gateway, model="midstream", input="one two three four five six seven")
    assert [e["type"] for e in out][-2:] == ["error", "response.failed"]
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"


UNSUPPORTED = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"background": True}, "background"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
    ({"conversation": "conv_123"}, "conversation"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"n": 2}, "n"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": []}, "input"),
]


@pytest.mark.parametrize(("extra", "param"), UNSUPPORTED, ids=[p for _, p in UNSUPPORTED])
def test_what_cannot_be_honoured_is_a_400_naming_it(gateway, extra, param):
    r = create(gateway, **{"model": "lora-bot", "input": "hi", **extra})
    assert r.status_code == 400, r.text
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == param


def test_errors_of_the_chat_path_pass_through(gateway):
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="no-such-model", input="hi")
    assert err.value.code == "model_not_found"
    r = create(gateway, model="err400", input="hi", stream=True)
    assert r.status_code == 400 and r.json()["error"]["message"] == "scripted failure 400"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="lora-bot", input="hi", temperature=3)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="lora-bot", input="hi", previous_response_id="resp_nope")


def test_structured_output_and_reasoning_effort_reach_the_chat_request(gateway, fake_upstream, upstream_requests):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    created(gateway, model="lora-bot", input="json please", reasoning={"effort": "low"},
            text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    sent = received(fake_upstream)[-1]["body"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "thing", "schema": schema, "strict": True}}
    assert sent["reasoning_effort"] == "low"


def test_stateless_history_items_become_one_assistant_turn(gateway, fake_upstream, upstream_requests):
    """Agents replay earlier output items themselves (store: false): an assistant message and the
    function calls after it are one chat assistant message; outputs as text parts are joined as parts."""
    created(gateway, model="lora-bot", store=False, input=[
        {"role": "user", "content": "plan a trip"},
        {"type": "message", "role": "assistant", "status": "completed", "id": "msg_1",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "id": "fc_2", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]},
        {"role": "user", "content": "so?"}])
    call = {"type": "function", "function": {"arguments": "{}"}}
    assert last_messages(fake_upstream) == [
        {"role": "user", "content": "plan a trip"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {**call, "id": "c1", "function": {"name": "get_weather", "arguments": "{}"}},
            {**call, "id": "c2", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {"role": "user", "content": "so?"}]
