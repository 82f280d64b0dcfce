"""The invariant of issue 21, over generated requests, against the real engine.

For every chat body drawn from OpenAI's request schema plus hostile values
(tests/gateway/chat_bodies.py), sent by project ``alpha`` through a real gateway (auth
required) to the real embedded engine:

* the answer is 200 or 4xx, never 5xx (nor a 200 stream that fails in-band);
* a normal request from project ``beta`` right after gets 200 (nothing one caller sent
  broke the engine, the breaker or the gateway for the others);
* every 200 is in the interaction log (read back through the stored-completions API,
  which waits for the log first).

Also here: a client that leaves mid-stream makes the engine abort (its counter), and the
record is a 499 with the deltas that were relayed.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import GatewayProcess
from tests.gateway.chat_bodies import chat_bodies, encode

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("TUNELOOP_PROPERTY_EXAMPLES", "60"))
NORMAL = {"model": "base", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1}


@pytest.fixture(scope="module")
def engine_gw(engine_server, tmp_path_factory):
    config = {"targets": {"engine": {"kind": "vllm", "base_urls": [engine_server.base_url], "timeout_s": 120}},
              "models": {"base": {"routes": [{"target": "engine", "model": DEFAULT_MODEL}]}}}
    gw = GatewayProcess(config, tmp_path_factory.mktemp("property-gw"), env={"TUNELOOP_AUTH": "required"})
    admin = gw.make_key("--project", "ops", "--admin")
    gw.keys = {}  # type: ignore[attr-defined]
    for project in ("alpha", "beta"):
        made = httpx.post(f"{gw.base_url}/admin/keys", json={"project": project},
                          headers={"authorization": f"Bearer {admin}"})
        gw.keys[project] = {"authorization": f"Bearer {made.json()['key']}"}  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def _completion_id(r: httpx.Response, streamed: bool) -> str:
    """The id of a 200; a stream must end with [DONE] and carry no error event."""
    if not streamed:
        return r.json()["id"]
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", r.text[-2000:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), r.text[-2000:]
    return chunks[0]["id"]


def test_every_request_gets_200_or_4xx_and_every_200_is_logged(engine_gw):
    client = httpx.Client(base_url=engine_gw.base_url, timeout=120)
    alpha, beta = engine_gw.keys["alpha"], engine_gw.keys["beta"]
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(chat_bodies("base"))
    def check(body: dict[str, Any]) -> None:
        r = client.post("/chat/completions", content=encode(body),
                        headers={**alpha, "content-type": "application/json"})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:2000])
        if r.status_code == 200:
            cid = _completion_id(r, body.get("stream") is True)
            stored = client.get(f"/chat/completions/{cid}", headers=alpha)
            assert stored.status_code == 200, f"a 200 that is not in the log: {cid} {stored.text}"
        else:
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 2000
        after = client.post("/chat/completions", json=NORMAL, headers=beta)
        assert after.status_code == 200, ("another tenant's request failed after", after.text)

    check()
    print(f"\nproperty: statuses {dict(sorted(seen.items()))}")
    assert seen.get(200), "some generated requests must succeed, or the test proves nothing"


def _aborted(engine_server) -> float:
    text = httpx.get(f"{engine_server.root_url}/metrics").text
    pattern = r"^tuneloop:engine_aborted_requests_total(?:\{[^}]*\})? (\S+)$"
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def test_leaving_mid_stream_aborts_the_engine_and_records_499(engine_gw, engine_server):
    before = _aborted(engine_server)
    body = {"model": "base", "messages": [{"role": "user", "content": "Count from one to five hundred."}],
            "max_tokens": 400, "temperature": 0, "stream": True}
    deltas: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{engine_gw.base_url}/chat/completions", json=body, timeout=60,
                      headers=engine_gw.keys["alpha"]) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                deltas.append(json.loads(line[6:]))
            if sum(1 for c in deltas if c["choices"] and c["choices"][0]["delta"].get("content")) == 3:
                break
    deadline = time.time() + 10
    while _aborted(engine_server) <= before and time.time() < deadline:
        time.sleep(0.1)
    assert _aborted(engine_server) > before, "the engine did not abort the request"
    db = sa.create_engine(f"sqlite:///{engine_gw.home}/tuneloop.db")
    while time.time() < deadline:
        with db.connect() as conn:
            row = conn.execute(sa.text("select status, completion_tokens from interactions where id = :id"),
                               {"id": deltas[0]["id"]}).first()
        if row is not None:
            break
        time.sleep(0.1)
    db.dispose()
    assert row is not None and row.status == 499 and 3 <= row.completion_tokens < 400, row
