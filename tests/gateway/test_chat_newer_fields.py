"""The Chat Completions fields OpenAI added in 2025-2026 (gateway.target_fields), through the real
`openai` SDK and the real gateway: `openai` targets receive them as sent; `vllm` targets receive
the ones they can honour and the others are a 400 naming the field, before any upstream call; an
alias mixing kinds keeps the request on the routes that can honour it."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fixtures.gateway import GatewayProcess, fake_config, received

MSG = [{"role": "user", "content": "where is my order 1234"}]
NEWER: dict[str, Any] = {
    "prompt_cache_key": "support-faq-v2", "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "30m", "mode": "explicit"}, "safety_identifier": "user-7f3a",
    "verbosity": "low", "moderation": {"model": "omni-moderation-latest"}, "service_tier": "flex",
    "reasoning_effort": "low", "web_search_options": {"search_context_size": "low"},
}
HONOURED_BY_VLLM: dict[str, Any] = {
    "prompt_cache_key": "support-faq-v2", "safety_identifier": "user-7f3a", "reasoning_effort": "low",
    "service_tier": "default", "verbosity": "medium", "prompt_cache_retention": "in_memory",
    "prompt_cache_options": {"mode": "implicit"},
}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_targets_receive_every_newer_field(gateway, fake_upstream, upstream_requests, stream):
    reply = gateway.client().chat.completions.create(model="ft-bot", messages=MSG, stream=stream, **NEWER)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices) == "echo: where is my order 1234"
    (req,) = received(fake_upstream)
    assert {k: req["body"].get(k) for k in NEWER} == NEWER


def test_vllm_targets_receive_the_fields_they_can_honour(gateway, fake_upstream, upstream_requests):
    reply = gateway.client().chat.completions.create(model="lora-bot", messages=MSG, **HONOURED_BY_VLLM)
    assert reply.choices[0].message.content == "echo: where is my order 1234"
    (req,) = received(fake_upstream)
    assert {k: req["body"].get(k) for k in HONOURED_BY_VLLM} == HONOURED_BY_VLLM


@pytest.mark.parametrize("field, value, code", [
    ("service_tier", "flex", "unsupported_value"),
    ("service_tier", "priority", "unsupported_value"),
    ("verbosity", "low", "unsupported_value"),
    ("verbosity", "high", "unsupported_value"),
    ("prompt_cache_retention", "24h", "unsupported_value"),
    ("prompt_cache_options", {"ttl": "30m"}, "unsupported_value"),
    ("prompt_cache_options", {"mode": "explicit"}, "unsupported_value"),
    ("moderation", {"model": "omni-moderation-latest"}, "unsupported_parameter"),
    ("web_search_options", {}, "unsupported_parameter"),
    ("safety_identifier", "u" * 65, "string_above_max_length"),
    ("prompt_cache_key", 42, "invalid_type"),
])
def test_vllm_targets_refuse_what_they_cannot_honour(gateway, fake_upstream, upstream_requests, field, value, code):
    client = gateway.client()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="lora-bot", messages=MSG, stream=stream, **{field: value})
        assert (err.value.status_code, err.value.param, err.value.code) == (400, field, code)
        assert err.value.type == "invalid_request_error" and f"'{field}'" in err.value.message
    assert received(fake_upstream) == []  # refused before any upstream call


def test_null_counts_as_absent(gateway, fake_upstream, upstream_requests):
    reply = gateway.client().chat.completions.create(
        model="lora-bot", messages=MSG, service_tier=None, verbosity=None, web_search_options=None, moderation=None)
    assert reply.choices[0].finish_reason == "stop"


def test_the_responses_api_gets_the_same_decisions(gateway, fake_upstream, upstream_requests):
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="lora-bot", input="hi", service_tier="flex")
    assert err.value.param == "service_tier"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="lora-bot", input="hi", text={"verbosity": "high"})
    assert err.value.param == "verbosity"
    assert received(fake_upstream) == []
    client.responses.create(model="ft-bot", input="hi", service_tier="flex", text={"verbosity": "high"},
                            prompt_cache_key="faq", safety_identifier="user-7f3a", store=False)
    (req,) = received(fake_upstream)  # an openai target serves /v1/responses: passed through, fields as sent
    assert req["path"] == "/v1/responses"
    assert {k: req["body"][k] for k in ("service_tier", "text", "prompt_cache_key", "safety_identifier")} == {
        "service_tier": "flex", "text": {"verbosity": "high"}, "prompt_cache_key": "faq",
        "safety_identifier": "user-7f3a"}


@pytest.fixture(scope="module")
def mixed(fake_upstream, tmp_path_factory):
    config = fake_config(fake_upstream, **{
        "local-first": {"routes": [{"target": "fake-vllm", "model": "local-v1"}], "fallbacks": ["ft-bot"]}})
    gw = GatewayProcess(config, tmp_path_factory.mktemp("mixed-home"))
    yield gw
    gw.stop()


def test_a_mixed_alias_serves_the_field_from_a_route_that_honours_it(mixed, fake_upstream, upstream_requests):
    client = mixed.client()
    plain = client.chat.completions.with_raw_response.create(model="local-first", messages=MSG)
    assert plain.headers["x-tuneloop-target"] == "fake-vllm"
    flex = client.chat.completions.with_raw_response.create(model="local-first", messages=MSG, service_tier="flex")
    assert flex.headers["x-tuneloop-target"] == "fake-openai"  # the vLLM route cannot: the fallback serves it
    first, second = received(fake_upstream)
    assert first["body"]["model"] == "local-v1"
    assert second["body"]["model"].startswith("ft:gpt-4o-mini") and second["body"]["service_tier"] == "flex"
