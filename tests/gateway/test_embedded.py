"""The embedded default and the vLLM provider against the real engine (real model)."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import GatewayProcess, free_port

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "What is the capital of France?"}]


def test_serve_embedded_default(tmp_path):
    """`tuneloop serve` with no config: the engine as a child process, SQLite, a real reply (chat and
    legacy completions)."""
    engine_port = free_port()
    gw = GatewayProcess(None, tmp_path, args=["--engine-port", str(engine_port)])
    try:
        gw.wait_ready()
        client = gw.client()
        assert [m.id for m in client.models.list()] == [DEFAULT_MODEL]
        reply = client.chat.completions.create(model=DEFAULT_MODEL, messages=MSG, max_tokens=12,
                                               temperature=0)
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens <= 12
        chunks = list(client.chat.completions.create(
            model=DEFAULT_MODEL, messages=MSG, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content  # greedy: same words either way
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
        assert client.chat.completions.retrieve(reply.id).id == reply.id
        assert (tmp_path / "tuneloop.db").exists()
        _legacy_completions(gw)
    finally:
        assert gw.stop() == 0
    # the engine child went away with the gateway
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{engine_port}/health", timeout=1)


def _legacy_completions(gw: GatewayProcess) -> None:
    """The engine child's /v1/completions through the vllm provider, plain and streamed, logged."""
    from tests.gateway.test_completions import record
    from tests.spec import validate

    client = gw.client()
    made = client.completions.create(model=DEFAULT_MODEL, prompt="The capital of France is", max_tokens=8,
                                     temperature=0)
    # vLLM's contract (the engine's) sends system_fingerprint null, which the spec does not allow
    validate("CreateCompletionResponse", {k: v for k, v in made.model_dump(exclude_unset=True).items()
                                          if v is not None})
    assert made.choices[0].text.strip() and made.usage.completion_tokens <= 8
    chunks = list(client.completions.create(model=DEFAULT_MODEL, prompt="The capital of France is", max_tokens=8,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == made.choices[0].text  # greedy both ways
    assert chunks[-1].usage.completion_tokens == made.usage.completion_tokens
    row = record(gw, chunks[0].id)
    assert row["object"] == "text_completion" and row["response"]["choices"][0]["text"] == made.choices[0].text


@pytest.fixture(scope="module")
def engine_gateway(engine_server, test_adapters, tmp_path_factory):
    name = engine_server.adapters[0]
    config = {
        "targets": {"engine": {"kind": "vllm", "base_urls": [engine_server.base_url], "timeout_s": 120}},
        "models": {
            "base": {"routes": [{"target": "engine", "model": DEFAULT_MODEL}]},
            "adapter": {"routes": [{"target": "engine", "model": name}]},
            "on-demand": {"routes": [{"target": "engine", "model": "gw-loaded",
                                      "lora_path": str(engine_server.adapter_paths[name])}]},
        },
    }
    gw = GatewayProcess(config, tmp_path_factory.mktemp("engine-gw"))
    yield gw
    gw.stop()
    httpx.post(f"{engine_server.root_url}/v1/unload_lora_adapter", json={"lora_name": "gw-loaded"})


def _greedy(client: openai.OpenAI, model: str) -> str:
    return client.chat.completions.create(model=model, messages=MSG, max_tokens=10,
                                          temperature=0).choices[0].message.content


def test_gateway_replies_equal_the_engine_replies(engine_gateway, engine_server):
    direct = openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)
    via = engine_gateway.client()
    assert _greedy(via, "base") == _greedy(direct, DEFAULT_MODEL)
    assert _greedy(via, "adapter") == _greedy(direct, engine_server.adapters[0])


def test_adapter_aware_route_loads_the_adapter_on_demand(engine_gateway, engine_server):
    before = {m["id"] for m in httpx.get(f"{engine_server.base_url}/models").json()["data"]}
    assert "gw-loaded" not in before
    reply = _greedy(engine_gateway.client(), "on-demand")
    after = {m["id"] for m in httpx.get(f"{engine_server.base_url}/models").json()["data"]}
    assert "gw-loaded" in after
    # same weights as the adapter it was loaded from, so the same greedy reply
    direct = openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)
    assert reply == _greedy(direct, engine_server.adapters[0])
