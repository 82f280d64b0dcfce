"""Traffic through the gateway lands in the log, readable through the stored-completions API."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.spec import validate

MSG = [{"role": "user", "content": "my parcel is late"}]


def test_plain_completion_is_stored_with_usage_and_metadata(gateway):
    client = gateway.client()
    made = client.chat.completions.create(model="ft-bot", messages=MSG, store=True,
                                          metadata={"ticket": "T-77"})
    got = client.chat.completions.retrieve(made.id)
    assert got.id == made.id and got.choices[0].message.content == made.choices[0].message.content
    assert got.usage.total_tokens == made.usage.total_tokens
    assert got.metadata == {"ticket": "T-77"}
    listed = client.chat.completions.list(metadata={"ticket": "T-77"})
    assert [c.id for c in listed.data] == [made.id]
    messages = client.chat.completions.messages.list(made.id)
    assert messages.data[0].content == "my parcel is late"


def test_streamed_completion_is_assembled_in_the_log(gateway):
    client = gateway.client()
    chunks = list(client.chat.completions.create(model="tools-bot", messages=MSG, stream=True))
    stored = client.chat.completions.retrieve(chunks[0].id)
    validate("CreateChatCompletionResponse", stored.model_dump(exclude_unset=True))
    call = stored.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert stored.choices[0].finish_reason == "tool_calls"
    assert stored.usage is not None and stored.usage.total_tokens > 0  # usage we asked upstream for


def test_log_policies(gateway):
    client = gateway.client()
    none = client.chat.completions.create(model="nolog", messages=MSG)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(none.id)
    unstored = client.chat.completions.create(model="storeonly", messages=MSG)
    stored = client.chat.completions.create(model="storeonly", messages=MSG, store=True)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(unstored.id)
    assert client.chat.completions.retrieve(stored.id).id == stored.id


def test_feedback_attaches_to_a_gateway_completion(gateway):
    made = gateway.client().chat.completions.create(model="lora-bot", messages=MSG)
    fb = httpx.post(f"{gateway.base_url}/feedback", json={
        "completion_id": made.id, "rating": 1,
        "correction": {"role": "assistant", "content": "Sorry! It ships tomorrow."}})
    assert fb.status_code == 200, fb.text
    back = httpx.get(f"{gateway.base_url}/chat/completions/{made.id}/feedback").json()
    assert back["data"][0]["rating"] == 1
    missing = httpx.post(f"{gateway.base_url}/feedback", json={"completion_id": "chatcmpl-nope",
                                                             "rating": 1})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_pii_is_redacted_before_the_log_when_the_model_asks(gateway):
    client = gateway.client()
    text = "mail me at jane.doe@example.com or call +1 415 555 0134, card 4111 1111 1111 1111"
    made = client.chat.completions.create(model="redacted", messages=[{"role": "user", "content": text}])
    assert "jane.doe@example.com" in made.choices[0].message.content  # the caller's reply is untouched
    stored = client.chat.completions.retrieve(made.id)
    prompt = client.chat.completions.messages.list(made.id).data[0].content
    for secret in ("jane.doe@example.com", "555 0134", "4111 1111 1111 1111"):
        assert secret not in prompt and secret not in stored.choices[0].message.content
    assert "[EMAIL]" in prompt and "[EMAIL]" in stored.choices[0].message.content
    plain = client.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": text}])
    assert "jane.doe@example.com" in client.chat.completions.messages.list(plain.id).data[0].content


def test_pii_is_redacted_from_streamed_replies_and_stored_responses_too(gateway):
    """A streamed reply is assembled in the log writer (gateway.raw_chunks): scrubbed there; a stored
    Response (POST /v1/responses) of such an alias is scrubbed as its interaction record is."""
    client = gateway.client()
    text = "mail me at jane.doe@example.com please"
    chunks = list(client.chat.completions.create(model="redacted", stream=True,
                                                 messages=[{"role": "user", "content": text}]))
    assert "jane.doe@example.com" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    stored = client.chat.completions.retrieve(chunks[0].id)
    assert "jane.doe@example.com" not in stored.choices[0].message.content
    assert "[EMAIL]" in stored.choices[0].message.content and stored.choices[0].finish_reason == "stop"
    made = client.responses.create(model="redacted", input=text)
    assert "jane.doe@example.com" in made.output_text  # the caller's reply is untouched
    kept = client.responses.retrieve(made.id)
    items = client.responses.input_items.list(made.id).data
    assert "jane.doe@example.com" not in kept.output_text and "[EMAIL]" in kept.output_text
    assert "jane.doe@example.com" not in str(items[0].content) and "[EMAIL]" in str(items[0].content)
