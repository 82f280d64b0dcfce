"""Every error leaves the gateway in OpenAI's envelope with OpenAI's status."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.spec import validate

MSG = [{"role": "user", "content": "hi"}]


def _envelope(resp: httpx.Response) -> dict:
    body = resp.json()
    validate("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(gateway, payload, **kw) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=30, **(
        {"content": payload} if isinstance(payload, bytes) else {"json": payload}), **kw)


def test_unknown_model_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().chat.completions.create(model="nope", messages=MSG)
    assert err.value.code == "model_not_found" and err.value.param == "model"
    assert "`nope` does not exist" in err.value.message
    _envelope(err.value.response)


@pytest.mark.parametrize("payload, param", [
    ({"model": "lora-bot", "messages": []}, "messages"),
    ({"model": "lora-bot"}, "messages"),
    ({"messages": MSG}, "model"),
    ({"model": 5, "messages": MSG}, "model"),
    ({"model": "lora-bot", "messages": MSG, "temperature": 3}, "temperature"),
    ({"model": "lora-bot", "messages": MSG, "temperature": "hot"}, "temperature"),
    ({"model": "lora-bot", "messages": MSG, "n": 0}, "n"),
    ({"model": "lora-bot", "messages": MSG, "max_tokens": -1}, "max_tokens"),
    ({"model": "lora-bot", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "lora-bot", "messages": ["hi"]}, "messages[0]"),
    ({"model": "lora-bot", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "lora-bot", "messages": MSG, "stream": "yes"}, "stream"),
    ({"model": "lora-bot", "messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "lora-bot", "messages": MSG, "metadata": {"k": 1}}, "metadata"),
])
def test_bad_fields_are_400_naming_the_param(gateway, payload, param):
    resp = post(gateway, payload)
    assert resp.status_code == 400
    err = _envelope(resp)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_sdk_sees_bad_request(gateway):
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(model="lora-bot", messages=MSG, temperature=3)
    assert err.value.param == "temperature"


@pytest.mark.parametrize("payload", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_json_is_400(gateway, payload):
    resp = post(gateway, payload, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert _envelope(resp)["type"] == "invalid_request_error"


def test_body_too_large_is_413(gateway):
    big = {"model": "lora-bot", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    resp = post(gateway, big)
    assert resp.status_code == 413
    _envelope(resp)


def test_upstream_client_error_passes_through(gateway):
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(model="err400", messages=MSG)
    assert err.value.body["message"] == "scripted failure 400"


def test_upstream_429_keeps_retry_after(gateway):
    with pytest.raises(openai.RateLimitError) as err:
        gateway.client().chat.completions.create(model="err429", messages=MSG)
    assert err.value.response.headers["retry-after"] == "1"
    _envelope(err.value.response)


@pytest.mark.parametrize("model, status", [("err500", 502), ("err503", 503), ("dead-bot", 503),
                                           ("hang", 504)])
def test_upstream_failures_are_5xx(gateway, model, status):
    with pytest.raises(openai.InternalServerError) as err:
        gateway.client().chat.completions.create(model=model, messages=MSG)
    assert err.value.status_code == status
    _envelope(err.value.response)


@pytest.mark.parametrize("model, status", [("err500", 502), ("dead-bot", 503)])
def test_stream_failing_before_first_chunk_is_a_plain_error(gateway, model, status):
    with pytest.raises(openai.InternalServerError) as err:
        list(gateway.client().chat.completions.create(model=model, messages=MSG, stream=True))
    assert err.value.status_code == status


@pytest.mark.parametrize("model", ["midstream", "drop"])
def test_failure_mid_stream_is_an_sse_error_event(gateway, model):
    got = []
    with pytest.raises(openai.APIError) as err:
        long = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]
        for chunk in gateway.client().chat.completions.create(model=model, messages=long, stream=True):
            got.append(chunk)
    assert got, "the first chunks reached the client before the failure"
    assert "mid-stream" in err.value.message or "failed" in err.value.message


def test_unknown_route_and_method_are_enveloped(gateway):
    resp = httpx.get(f"{gateway.root}/v1/nothing-here")
    assert resp.status_code == 404
    _envelope(resp)


def test_model_retrieve_unknown_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().models.retrieve("nope")
    assert err.value.code == "model_not_found"
