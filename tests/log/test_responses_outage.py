"""Stored responses go through the interaction log: with its database away, ``POST /v1/responses``
still answers 200 with ``store: true`` (plain and streamed), a retrieve says 503 (retry), not 404,
and once the database is back every response of the outage is there and continues a conversation."""

from __future__ import annotations

import time

import httpx

from tests.fixtures.database import PgCluster
from tests.fixtures.gateway import GatewayProcess, fake_config


def test_responses_are_stored_through_a_postgres_outage(pg_cluster: PgCluster, fake_upstream, tmp_path) -> None:
    gw = GatewayProcess({**fake_config(fake_upstream), "database_url": pg_cluster.url}, tmp_path / "home")
    try:
        client = gw.client()
        before = client.responses.create(model="lora-bot", input="before")
        assert client.responses.retrieve(before.id).output_text == "echo: before"  # read-your-writes
        pg_cluster.stop("immediate")
        during = client.responses.create(model="lora-bot", input="during")
        assert during.store is True and during.output_text == "echo: during"
        with client.responses.stream(model="lora-bot", input="streamed") as stream:
            streamed = stream.get_final_response()
        assert streamed.store is True and streamed.output_text == "echo: streamed"
        away = httpx.get(f"{gw.base_url}/responses/{during.id}", timeout=30)
        assert away.status_code == 503 and away.json()["error"]["code"] == "database_unavailable", away.text
        pg_cluster.start()
        deadline = time.monotonic() + 60
        while True:  # the spool is replayed: the outage's responses land
            got = httpx.get(f"{gw.base_url}/responses/{during.id}", timeout=30)
            if got.status_code == 200:
                break
            assert got.status_code == 503 and time.monotonic() < deadline, got.text
            time.sleep(0.3)
        assert client.responses.retrieve(streamed.id).output_text == "echo: streamed"
        items = client.responses.input_items.list(during.id)
        assert [item.content[0].text for item in items.data] == ["during"]
        after = client.responses.create(model="lora-bot", input="after", previous_response_id=during.id)
        assert after.output_text == "echo: after"
        assert [item.content[0].text for item in client.responses.input_items.list(after.id).data] == ["after"]
    finally:
        gw.stop()
