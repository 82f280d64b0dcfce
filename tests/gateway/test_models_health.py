"""GET /v1/models, /v1/models/{model}, /health/*."""

from __future__ import annotations

import httpx

from tests.spec import validate


def test_models_list_and_retrieve(gateway):
    client = gateway.client()
    raw = client.models.with_raw_response.list()
    validate("ListModelsResponse", raw.http_response.json())
    ids = [m.id for m in raw.parse()]
    assert "ft-bot" in ids and "lora-bot" in ids
    card = client.models.retrieve("ft-bot")
    validate("Model", card.model_dump(exclude_unset=True))
    # the card says which fine-tuned model stands behind the name (vLLM's root/parent)
    assert card.model_dump()["root"].startswith("ft:gpt-4o-mini")
    assert card.model_dump()["parent"] == "gpt-4o-mini-2024-07-18"


def test_health(gateway):
    assert httpx.get(f"{gateway.root}/health/live").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.root}/health/ready")
    body = ready.json()
    # the config names a deliberately dead target, so the gateway is not ready
    assert ready.status_code == 503 and body["targets"]["dead"] is False
    assert body["targets"]["fake-vllm"] is True and body["targets"]["fake-openai"] is True
