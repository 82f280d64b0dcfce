"""The log database away does not stop the gateway: keys verified before it went keep working,
what needs the database says 503 (retry), never 500, and every 200 of the outage is logged after."""

from __future__ import annotations

import http.client
import json
import time

import httpx
import sqlalchemy as sa

from gateway.store import db
from tests.fixtures.database import PgCluster
from tests.fixtures.gateway import GatewayProcess, fake_config

MSG = [{"role": "user", "content": "hello"}]


def chat(gw: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "lora-bot", "messages": MSG}, timeout=30)


def test_a_postgres_outage_keeps_known_keys_serving(pg_cluster: PgCluster, fake_upstream, tmp_path) -> None:
    config = {**fake_config(fake_upstream), "database_url": pg_cluster.url}
    gw = GatewayProcess(config, tmp_path / "home", env={"TUNELOOP_AUTH": "required"})
    try:
        known, unseen = gw.make_key("--project", "alpha"), gw.make_key("--project", "beta")
        assert chat(gw, known).status_code == 200  # verified once: cached
        pg_cluster.stop("immediate")
        ids = []
        for _ in range(5):
            reply = chat(gw, known)
            assert reply.status_code == 200, reply.text  # served while the log spools
            ids.append(reply.json()["id"])
            time.sleep(0.3)  # past the key cache's second: it is looked up again, and trusted as before
        refused = chat(gw, unseen)  # never verified: cannot be checked
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "database_unavailable"
        # One keep-alive connection, as an SDK's pool: the 503s must leave it open for the next request
        # (a 503 answered by the catch-all handler made uvicorn close it under the client's next request)
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        auth = {"authorization": f"Bearer {known}", "content-type": "application/json"}
        for _ in range(2):
            conn.request("POST", "/v1/feedback", body=json.dumps({"completion_id": ids[0], "rating": 1}),
                         headers=auth)
            feedback = conn.getresponse()
            text = feedback.read().decode()
            assert feedback.status == 503, text  # the log is behind: not a 404, not a 500
        conn.request("GET", f"/v1/chat/completions/{ids[0]}", headers=auth)
        stored = conn.getresponse()
        assert stored.status == 503 and json.loads(stored.read())["error"]["code"] == "database_unavailable"
        conn.close()
        pg_cluster.start()
        engine = db.create_engine(pg_cluster.url)
        deadline = time.monotonic() + 60
        while True:  # the spool is replayed: every 200 of the outage is in the log
            with engine.connect() as conn:
                found = set(conn.execute(sa.text("SELECT id FROM interactions")).scalars())
            if set(ids) <= found:
                break
            assert time.monotonic() < deadline, sorted(set(ids) - found)
            time.sleep(0.3)
        engine.dispose()
        assert chat(gw, unseen).status_code == 200
    finally:
        gw.stop()
    log = gw.log_path.read_text()
    assert "keys verified before are trusted" in log and "Exception in ASGI application" not in log
