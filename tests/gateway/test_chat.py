"""POST /v1/chat/completions through the real gateway, driven by the real openai SDK."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.gateway import FAKE_KEY, received
from tests.spec import validate

MSG = [{"role": "user", "content": "where is my order 1234"}]


@pytest.mark.parametrize("model", ["ft-bot", "lora-bot"])
def test_non_stream_validates_and_gets_gateway_id(gateway, fake_upstream, model):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSG)
    body = json.loads(raw.text)
    validate("CreateChatCompletionResponse", body)
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: where is my order 1234"
    assert completion.id.startswith("chatcmpl-") and not completion.id.startswith("chatcmpl-up")
    assert raw.headers["x-request-id"] == completion.id
    u = completion.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens > 0
    # a second call gets another id
    assert client.chat.completions.create(model=model, messages=MSG).id != completion.id


def test_upstream_gets_openai_key_and_upstream_model(gateway, fake_upstream, upstream_requests):
    gateway.client(api_key="client-key").chat.completions.create(model="ft-bot", messages=MSG)
    (req,) = received(fake_upstream)
    assert req["body"]["model"] == "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    assert req["headers"]["authorization"] == f"Bearer {FAKE_KEY}"  # never the client's key


@pytest.mark.parametrize("model", ["ft-bot", "lora-bot"])
def test_stream_with_usage(gateway, model):
    chunks = list(gateway.client().chat.completions.create(
        model=model, messages=MSG, stream=True, stream_options={"include_usage": True}))
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: where is my order 1234"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_without_usage_hides_the_usage_we_asked_for(gateway, fake_upstream, upstream_requests):
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions",
                      json={"model": "lora-bot", "messages": MSG, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in e and e["choices"] for e in events)
    # the gateway asked the upstream for usage, to log the tokens of streamed calls
    (req,) = received(fake_upstream)
    assert req["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["tools-bot", "tools-openai"])
def test_streamed_tool_calls_reassemble(gateway, model):
    stream = gateway.client().chat.completions.create(model=model, messages=MSG, stream=True)
    name, args, call_id = "", "", None
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call_id = call.id or call_id
            name += (call.function.name or "") if call.function else ""
            args += (call.function.arguments or "") if call.function else ""
    assert (call_id, name, json.loads(args)) == ("call_abc123", "get_weather", {"city": "Paris"})


EVERY_FIELD = dict(
    tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    tool_choice="auto", response_format={"type": "json_object"}, n=2, seed=7, stop=["\n\n"],
    logprobs=True, top_logprobs=2, max_completion_tokens=50, metadata={"ticket": "T-1"}, store=True,
    user="end-user-9", temperature=0.3, top_p=0.9, presence_penalty=0.1, frequency_penalty=0.2,
    logit_bias={"50256": -100}, parallel_tool_calls=False)


def test_every_field_reaches_vllm_untouched(gateway, fake_upstream, upstream_requests):
    gateway.client().chat.completions.create(
        model="lora-bot", messages=MSG, **EVERY_FIELD,
        extra_body={"top_k": 5, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}})
    (req,) = received(fake_upstream)
    sent = {**EVERY_FIELD, "messages": MSG, "model": "support-v3", "top_k": 5,
            "repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}}
    assert req["body"] == sent


def test_openai_target_gets_every_openai_field_but_not_vllm_extras(gateway, fake_upstream,
                                                                   upstream_requests):
    gateway.client().chat.completions.create(model="ft-bot", messages=MSG, **EVERY_FIELD,
                                             extra_body={"top_k": 5})
    (req,) = received(fake_upstream)
    assert "top_k" not in req["body"]
    for key, value in EVERY_FIELD.items():
        assert req["body"][key] == value, key


def test_n_choices(gateway):
    completion = gateway.client().chat.completions.create(model="lora-bot", messages=MSG, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_fallback_answers_when_primary_is_down(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(model="with-fallback", messages=MSG)
    assert raw.parse().choices[0].message.content.startswith("echo:")
    assert raw.headers["x-tuneloop-target"] == "fake-vllm"
