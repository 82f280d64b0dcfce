"""GET /v1/models, /v1/models/{model}, /health/*."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from gateway.retirements import earliest_shutdown, shutdown_date
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


def test_cards_carry_the_shutdown_date_of_retiring_ft_models(gateway):
    raw = gateway.client().models.with_raw_response.list()
    cards = {c["id"]: c for c in raw.http_response.json()["data"]}
    for card in cards.values():
        validate("Model", card)  # OpenAI's field: an ISO date, or null when none is announced
    assert cards["ft-bot"]["shutdown_date"] == "2027-01-14"  # ft:gpt-4o-mini-2024-07-18:...
    assert cards["lora-bot"]["shutdown_date"] is None and cards["tools-openai"]["shutdown_date"] is None
    one = gateway.client().models.retrieve("ft-bot")
    assert one.model_dump()["shutdown_date"] == "2027-01-14"


@pytest.mark.parametrize("model, expected", [
    ("ft:gpt-4o-2024-08-06:acme::x1", date(2027, 1, 14)),
    ("ft:gpt-4o-mini:acme:support:x2", date(2027, 1, 14)),
    ("ft:gpt-4.1-2025-04-14:acme::x3", date(2027, 1, 14)),
    ("ft:gpt-4.1-mini-2025-04-14:acme::x4", date(2027, 1, 14)),
    ("ft:gpt-4.1-nano-2025-04-14:acme::x5", date(2027, 1, 14)),
    ("ft:gpt-3.5-turbo-0125:acme::x6", None),  # not in the announcement
    ("ft:gpt-4o-minimal-2024-07-18:acme::x7", None),  # a family is matched whole, not by prefix
    ("gpt-4o-mini", None),  # the base model itself is not a fine-tune
    ("support-v3", None),
])
def test_shutdown_dates_of_the_retiring_families(model, expected):
    assert shutdown_date(model) == expected


def test_an_alias_reports_its_first_retiring_route():
    assert earliest_shutdown(["support-v3", "ft:gpt-4.1-nano-2025-04-14:acme::x5"]) == date(2027, 1, 14)
    assert earliest_shutdown(["support-v3", "ft:gpt-3.5-turbo-0125:acme::x6"]) is None


def test_health(gateway):
    assert httpx.get(f"{gateway.root}/health/live").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.root}/health/ready")
    body = ready.json()
    # the config names a deliberately dead target, so the gateway is not ready
    assert ready.status_code == 503 and body["targets"]["dead"] is False
    assert body["targets"]["fake-vllm"] is True and body["targets"]["fake-openai"] is True
