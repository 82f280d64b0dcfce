"""Structured outputs through the real engine and the openai SDK: ``response_format`` json_object and
json_schema (``client.chat.completions.parse`` with a pydantic model), streamed and not, sampled with
several seeds, ``n`` choices, and inside one continuous batch beside free-text requests and adapters."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Describe a customer as JSON with a name and an age."}]
pytestmark = pytest.mark.slow


class Customer(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "customer", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)


def test_json_object_replies_parse(client) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=80,
                                           response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert reply.choices[0].finish_reason == "stop"


def test_parse_with_a_pydantic_model_gives_the_model(client) -> None:
    done = client.chat.completions.parse(model=MODEL, messages=ASK, temperature=0, max_tokens=80,
                                         response_format=Customer)
    assert isinstance(done.choices[0].message.parsed, Customer), done.choices[0].message.content


def test_every_sampled_reply_validates(client) -> None:
    for seed in range(4):
        reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=1.0, seed=seed, n=2,
                                               max_tokens=80, response_format=FORMAT)
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_a_streamed_reply_validates(client) -> None:
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0.7, seed=3, max_tokens=80, response_format=FORMAT, stream=True)
        if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_constrained_and_free_requests_share_a_batch(client, engine_server) -> None:
    """Constrained rows (on the base and on adapters) beside free ones: each constrained reply validates,
    and a free greedy reply is the one it gives alone."""
    free = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "temperature": 0,
            "max_tokens": 24}
    alone = client.chat.completions.create(**free).choices[0].message.content
    models = [MODEL, *engine_server.adapters[:2]]

    def constrained(i: int) -> str:
        return client.chat.completions.create(model=models[i % len(models)], messages=ASK, temperature=0.8,
                                              seed=i, max_tokens=80, response_format=FORMAT
                                              ).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        shaped = [pool.submit(constrained, i) for i in range(6)]
        plain = [pool.submit(lambda: client.chat.completions.create(**free).choices[0].message.content)
                 for _ in range(2)]
        for f in shaped:
            jsonschema.validate(json.loads(f.result()), SCHEMA)
        assert [f.result() for f in plain] == [alone, alone]
