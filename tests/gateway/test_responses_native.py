"""POST /v1/responses passed through to targets that serve the Responses API (an `openai` target by
default, a `vllm` one with `responses_api: true`), through the real gateway and the real `openai` SDK,
against the fake upstream's /v1/responses (tests/fakes/openai_responses.py): the request reaches the
upstream as sent (model replaced, `store: false`, the whole conversation as input), the client gets the
gateway's id and storage, every body and event checks against OpenAI's spec, fallbacks apply, the log
holds a chat completion that becomes an SFT line; an alias on a chat-only target is still translated."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.datasets.build import BuildOptions, build
from gateway.auth import Principal
from gateway.errors import InvalidRequest
from gateway.log.export import ExportFilters
from gateway.reserve import RESPONSES_MAX, ask_for
from gateway.responses.translate import to_completion
from gateway.sse import SSEParser
from gateway.store import db
from gateway.validate import apply_key_limits
from tests.fixtures.gateway import FAKE_KEY_ENV, GatewayProcess, fake_config, received
from tests.gateway.test_responses import EVENT_SCHEMAS, TOOL
from tests.spec import validate

FT = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
EXTRA = {
    "native-fallback": {"routes": [{"target": "faulty-native", "model": "fake-error-500"}], "retries": 0,
                        "fallbacks": ["ft-bot"]},
    "native-vllm": {"routes": [{"target": "vllm-responses", "model": "fake-echo"}]},
    "native-midstream": {"routes": [{"target": "fake-openai", "model": "fake-midstream-error"}]},
    "mixed": {"routes": [{"target": "fake-vllm", "model": "local-v1"}], "fallbacks": ["ft-bot"]},
}


@pytest.fixture(scope="module")
def gw(fake_upstream, tmp_path_factory):
    config = fake_config(fake_upstream, **EXTRA)
    config["targets"].update({
        "faulty-native": {"kind": "openai", "base_url": fake_upstream.base_url, "api_key_env": FAKE_KEY_ENV,
                          "timeout_s": 3, "breaker_failures": 1000},
        "vllm-responses": {"kind": "vllm", "base_urls": [fake_upstream.base_url], "timeout_s": 3,
                           "responses_api": True}})
    gw = GatewayProcess(config, tmp_path_factory.mktemp("responses-native"))
    yield gw
    gw.stop()


def sent(fake_upstream) -> list[dict[str, Any]]:
    """The bodies of the /v1/responses requests the upstream received."""
    return [r["body"] for r in received(fake_upstream) if r.get("path") == "/v1/responses"]


def stream_events(gw: GatewayProcess, **body: Any) -> tuple[bytes, list[dict[str, Any]]]:
    raw = b""
    with httpx.stream("POST", f"{gw.base_url}/responses", json={**body, "stream": True}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for piece in r.iter_bytes():
            raw += piece
    events = [orjson.loads(data) for data in SSEParser().feed(raw)]
    for event in events:
        validate(EVENT_SCHEMAS[event["type"]], event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return raw, events


def test_passed_through_as_sent_with_the_gateways_id(gw, fake_upstream, upstream_requests):
    client = gw.client()
    asked = {"input": "hello there", "instructions": "Be brief.", "temperature": 0.5, "max_output_tokens": 50,
             "metadata": {"team": "a"}, "include": ["message.output_text.logprobs"], "top_logprobs": 2,
             "tools": [TOOL, {"type": "web_search"}]}
    raw = client.responses.with_raw_response.create(model="ft-bot", **asked)
    body = raw.http_response.json()
    validate("Response", body)
    (up,) = sent(fake_upstream)
    assert up == {**asked, "model": FT, "store": False}  # as sent: built-in tools and include too
    assert body["id"].startswith("resp_") and not body["id"].startswith("resp_up")
    assert body["store"] is True and body["output"][0]["content"][0]["text"] == "echo: hello there"
    assert raw.headers["x-tuneloop-target"] == "fake-openai"
    assert float(raw.headers["x-tuneloop-cost-usd"]) == pytest.approx((1 * 0.30 + 1 * 0.15 + 3 * 1.20) / 1e6)
    assert httpx.get(f"{gw.base_url}/responses/{body['id']}").json() == body

    logged = client.chat.completions.retrieve(raw.headers["x-request-id"])  # a chat completion, as translated
    assert logged.choices[0].message.content == "echo: hello there" and logged.choices[0].finish_reason == "stop"
    assert (logged.usage.prompt_tokens, logged.usage.completion_tokens) == (2, 3)
    assert logged.usage.prompt_tokens_details.cached_tokens == 1
    messages = client.chat.completions.messages.list(logged.id, order="asc").data
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."), ("user", "hello there")]


def test_a_stream_relays_the_upstreams_events_with_the_gateways_id(gw, fake_upstream, upstream_requests):
    raw, events = stream_events(gw, model="ft-bot", input="one two three four five")
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas == 2 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * deltas, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert b"[DONE]" not in raw and raw.startswith(b"event: response.created\ndata: ")
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1 and not ids.pop().startswith("resp_up")
    (up,) = sent(fake_upstream)
    assert up == {"model": FT, "input": "one two three four five", "stream": True, "store": False}

    with gw.client().responses.stream(model="ft-bot", input="streamed hello") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == "echo: streamed hello" and final.store is True
    assert gw.client().responses.retrieve(final.id).output_text == "echo: streamed hello"


def test_previous_response_id_sends_the_whole_conversation(gw, fake_upstream, upstream_requests):
    client = gw.client()
    first = client.responses.create(model="ft-bot", input="one", instructions="first turn only")
    second = client.responses.create(model="ft-bot", input="two", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == "echo: two"
    up = sent(fake_upstream)[-1]
    assert "previous_response_id" not in up and "instructions" not in up and up["store"] is False
    assert [(i.get("role"), i["content"] if isinstance(i["content"], str) else i["content"][0]["text"])
            for i in up["input"]] == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]
    assert [i.content[0].text for i in client.responses.input_items.list(second.id).data] == ["two"]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="ft-bot", input="three", previous_response_id=first.id)


def test_a_function_call_round_trip_is_logged_and_trains(gw, fake_upstream, upstream_requests, tmp_path: Path):
    client, case = gw.client(), uuid.uuid4().hex
    first = client.responses.create(model="agent-openai", input="weather in Paris?", tools=[TOOL],
                                    metadata={"case": case})
    (call,) = first.output
    assert call.type == "function_call" and call.call_id == "call_abc123"
    raw = client.responses.with_raw_response.create(
        model="agent-openai", previous_response_id=first.id, tools=[TOOL], metadata={"case": case},
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert raw.parse().output_text == "echo: sunny"
    assert [i["type"] for i in sent(fake_upstream)[-1]["input"]] == ["message", "function_call",
                                                                    "function_call_output"]
    _, events = stream_events(gw, model="agent-openai", input="weather?", tools=[TOOL])
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city": "Paris"}' and events[-1]["type"] == "response.completed"

    logged = client.chat.completions.retrieve(raw.headers["x-request-id"])
    assert logged.choices[0].message.content == "echo: sunny"
    out = tmp_path / "sft.jsonl"
    report = build(db.create_engine(f"sqlite:///{gw.home / 'tuneloop.db'}"),
                   BuildOptions(fmt="sft", out=out, val_fraction=0.0, progress=False,
                                filters=ExportFilters(metadata={"case": case})))
    assert report["written"] == {"train": 2, "val": 0}, report
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    last = next(ln for ln in lines if ln["messages"][-1].get("content") == "echo: sunny")
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert last["messages"][1]["tool_calls"][0]["id"] == "call_abc123"
    assert last["tools"][0]["function"]["name"] == "get_weather"
    calls = next(ln for ln in lines if ln is not last)
    assert calls["messages"][-1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def test_a_failing_native_target_falls_back_to_a_good_one(gw, fake_upstream, upstream_requests):
    for stream in (False, True):
        raw = httpx.post(f"{gw.base_url}/responses", json={"model": "native-fallback", "input": "hi", "stream": stream},
                         timeout=10)
        assert raw.status_code == 200 and raw.headers["x-tuneloop-target"] == "fake-openai"
    assert [b["model"] for b in sent(fake_upstream)] == ["fake-error-500", FT] * 2
    families = text_string_to_metric_families(httpx.get(f"{gw.root}/metrics").text)
    assert any(s.labels.get("api") == "responses" and s.labels.get("target") == "fake-openai"
               for f in families for s in f.samples if s.name == "tuneloop_requests_total")


def test_a_vllm_target_with_responses_api_is_passed_through(gw, fake_upstream, upstream_requests):
    client = gw.client()
    assert client.responses.create(model="native-vllm", input="hi vllm").output_text == "echo: hi vllm"
    with client.responses.stream(model="native-vllm", input="streamed vllm") as stream:
        assert stream.get_final_response().output_text == "echo: streamed vllm"
    assert [b["model"] for b in sent(fake_upstream)] == ["fake-echo", "fake-echo"]


def test_chat_only_targets_and_mixed_aliases_are_translated(gw, fake_upstream, upstream_requests):
    client = gw.client()
    assert client.responses.create(model="lora-bot", input="on vllm").output_text == "echo: on vllm"
    assert client.responses.create(model="mixed", input="mixed").output_text == "echo: mixed"
    assert sent(fake_upstream) == []
    assert [r["body"]["messages"] for r in received(fake_upstream)] == [[{"role": "user", "content": "on vllm"}],
                                                                       [{"role": "user", "content": "mixed"}]]


def test_a_broken_stream_ends_with_error_and_response_failed(gw):
    _, events = stream_events(gw, model="native-midstream", input="one two three four five six seven")
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    stored = gw.client().responses.retrieve(failed["id"])
    assert stored.status == "failed" and stored.output[0].content[0].text == "echo: one two three four five"


REFUSED = [({"background": True}, "background"), ({"conversation": "conv_1"}, "conversation"),
           ({"prompt": {"id": "pmpt_1"}}, "prompt"), ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
           ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type")]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[p for _, p in REFUSED])
def test_what_cannot_be_kept_consistent_is_still_a_400(gw, fake_upstream, upstream_requests, extra, param):
    r = httpx.post(f"{gw.base_url}/responses", json={"model": "ft-bot", "input": "hi", **extra}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert sent(fake_upstream) == []


def test_a_keys_limits_count_a_passed_through_body():
    cfg = SimpleNamespace(timeout_s=3.0, prices={"input": 1.0, "output": 2.0})
    plan = [SimpleNamespace(retry_budget_s=30.0, target="t", provider=SimpleNamespace(cfg=cfg))]
    body = {"model": "m", "instructions": "Be brief.", "input": [{"role": "user", "content": "x" * 300}]}
    key = Principal("k", "p", limits={"tpm": 10_000, "max_tokens": 100})
    apply_key_limits(key, body, fields=RESPONSES_MAX)
    assert body["max_output_tokens"] == 100  # absent: the key's cap, as max_tokens on chat
    ask = ask_for(key, body, plan, {}, responses=True)
    assert ask.prompt_tokens == (9 + 300) // 3 + 4 + 3 and ask.tokens == ask.prompt_tokens + 100
    with pytest.raises(InvalidRequest):
        apply_key_limits(key, {**body, "max_output_tokens": 500}, fields=RESPONSES_MAX)


def test_a_response_reads_back_as_a_chat_completion():
    response = {"model": "m", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"type": "reasoning", "summary": []},
                           {"type": "message", "content": [{"type": "output_text", "text": "a"},
                                                           {"type": "refusal", "refusal": "no"}]},
                           {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}],
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                          "input_tokens_details": {"cached_tokens": 3}}}
    done = to_completion(response, "chatcmpl-1", 9)
    assert done["choices"] == [{"index": 0, "finish_reason": "length", "logprobs": None, "message": {
        "role": "assistant", "content": "a", "refusal": "no",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]
    assert done["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 3},
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert (done["id"], done["object"], done["created"]) == ("chatcmpl-1", "chat.completion", 9)
