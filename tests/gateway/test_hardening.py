"""No single request takes the gateway down for other tenants (issue 21), against a real
gateway (auth required, two projects) in front of the fake upstream.

Breaker rule under test (gateway.resilience): a fault the request may have caused (an
upstream 500) opens the breaker only once two tenants have met it; a body the gateway
cannot forward or log is a 400 before any upstream call.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from adapters.datasets.sft import sft_line
from tests.fixtures.gateway import GatewayProcess, received

SECRET_PATH = "/srv/secret-adapters/support-v9"


def _config(fake: Any) -> dict[str, Any]:
    vllm = {"kind": "vllm", "base_urls": [fake.base_url], "timeout_s": 5}
    return {
        "targets": {
            "shared": {**vllm, "breaker_failures": 3, "breaker_cooldown_s": 30},
            "pair": {**vllm, "breaker_failures": 3, "breaker_cooldown_s": 1},
            "strict": {**vllm, "breaker_failures": 1, "breaker_cooldown_s": 30},
            "tripwire": {**vllm, "breaker_failures": 1, "breaker_cooldown_s": 1.5},
            "oa": {"kind": "openai", "base_url": fake.base_url, "api_key_env": "TUNELOOP_TEST_FAKE_OPENAI_KEY",
                   "timeout_s": 5},
        },
        "models": {
            "echo": {"routes": [{"target": "shared", "model": "fake-echo"}]},
            "boom": {"routes": [{"target": "shared", "model": "fake-error-500"}], "retries": 0},
            "pair-echo": {"routes": [{"target": "pair", "model": "fake-echo"}]},
            "pair-boom": {"routes": [{"target": "pair", "model": "fake-error-500"}], "retries": 0},
            "strict-echo": {"routes": [{"target": "strict", "model": "fake-echo"}]},
            "strict-400": {"routes": [{"target": "strict", "model": "fake-error-400"}], "retries": 0},
            "strict-422": {"routes": [{"target": "strict", "model": "fake-error-422"}], "retries": 0},
            "trip": {"routes": [{"target": "tripwire", "model": "fake-error-503"}], "retries": 0},
            "trip-echo": {"routes": [{"target": "tripwire", "model": "fake-echo"}]},
            "slow-words": {"routes": [{"target": "shared", "model": "fake-slowstream"}]},
            "slow-reply": {"routes": [{"target": "shared", "model": "fake-slow-3"}], "retries": 0},
            "openai-echo": {"routes": [{"target": "oa", "model": "fake-echo"}]},
            "adapter": {"routes": [{"target": "shared", "model": "support-v9", "lora_path": SECRET_PATH}]},
        },
    }


@pytest.fixture(scope="module")
def hard(fake_upstream, tmp_path_factory):
    gw = GatewayProcess(_config(fake_upstream), tmp_path_factory.mktemp("hardening"),
                        env={"TUNELOOP_AUTH": "required", "TUNELOOP_BODY_TIMEOUT_S": "1"})
    admin = gw.make_key("--project", "ops", "--admin")
    keys = {"admin": admin}
    for project in ("alpha", "beta"):
        made = httpx.post(f"{gw.base_url}/admin/keys", json={"project": project},
                          headers={"authorization": f"Bearer {admin}"})
        assert made.status_code == 200, made.text
        keys[project] = made.json()["key"]
    gw.keys = keys  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def _chat(gw: GatewayProcess, who: str, body: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gw.base_url}/chat/completions", content=data, timeout=kw.pop("timeout", 10),
                      headers={"authorization": f"Bearer {gw.keys[who]}",  # type: ignore[attr-defined]
                               "content-type": "application/json"}, **kw)


def _ask(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _records(gw: GatewayProcess, where: str, timeout: float = 10) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{gw.home}/tuneloop.db")
    deadline = time.time() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(f"select * from interactions where {where}")).mappings().all()
            if rows or time.time() > deadline:
                return list(rows)
            time.sleep(0.1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("depth", [64, 65, 253, 254, 1023])
def test_deep_nesting_is_a_400_before_any_upstream_call(hard, depth):
    """The body object is level 1; ``x`` nests arrays up to ``depth`` in all. 64 is the limit."""
    raw = b'{"model":"strict-echo","messages":[{"role":"user","content":"hi"}],"x":' + \
        b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    r = _chat(hard, "alpha", raw)
    if depth <= 64:
        assert r.status_code == 200, r.text
        assert _records(hard, f"id = '{r.json()['id']}'"), "the 200 is in the log"
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "nesting_too_deep", r.text
    # `strict` opens on one fault: had the deep body reached it, this would be a 503
    after = _chat(hard, "beta", _ask("strict-echo"))
    assert after.status_code == 200, after.text


def test_nul_is_a_400_and_the_breaker_is_untouched(hard):
    r = _chat(hard, "alpha", b'{"model":"strict-echo","messages":[{"role":"user","content":"a\\u0000b"}]}')
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    assert _chat(hard, "beta", _ask("strict-echo")).status_code == 200


def test_one_tenants_upstream_500s_do_not_open_the_breaker_for_another(hard):
    for _ in range(6):  # twice the breaker's threshold, all from alpha
        assert _chat(hard, "alpha", _ask("boom")).status_code == 502
    other = _chat(hard, "beta", _ask("echo"))
    assert other.status_code == 200, other.text


def test_500s_met_by_two_tenants_do_open_it(hard):
    for who in ("alpha", "beta", "alpha"):
        assert _chat(hard, who, _ask("pair-boom")).status_code == 502
    tripped = _chat(hard, "beta", _ask("pair-echo"))
    assert tripped.status_code == 503 and "circuit open" in tripped.json()["error"]["message"]
    time.sleep(1.1)  # cooldown: the probe succeeds and closes it
    assert _chat(hard, "beta", _ask("pair-echo")).status_code == 200


def test_upstream_4xx_does_not_count(hard):
    for model, status in (("strict-400", 400), ("strict-422", 422), ("strict-400", 400)):
        assert _chat(hard, "alpha", _ask(model)).status_code == status
    assert _chat(hard, "beta", _ask("strict-echo")).status_code == 200


def test_readiness_is_off_while_every_replica_is_open(hard):
    assert httpx.get(f"{hard.root}/health/ready").status_code == 200
    assert _chat(hard, "alpha", _ask("trip")).status_code == 503  # a replica fault: opens at once
    ready = httpx.get(f"{hard.root}/health/ready")
    assert ready.status_code == 503 and ready.json()["open"] == ["tripwire"]
    skipped = _chat(hard, "alpha", _ask("trip-echo"))
    assert skipped.status_code == 503 and "http" not in skipped.json()["error"]["message"]
    time.sleep(1.6)  # cooled down: a probe may go through, so ready again
    assert httpx.get(f"{hard.root}/health/ready").status_code == 200
    assert _chat(hard, "alpha", _ask("trip-echo")).status_code == 200


def test_vllm_targets_get_the_tenant_openai_targets_do_not(hard, fake_upstream, upstream_requests):
    marker = uuid.uuid4().hex
    assert _chat(hard, "alpha", _ask("echo", marker)).status_code == 200
    assert _chat(hard, "beta", _ask("echo", marker, stream=True)).status_code == 200
    assert _chat(hard, "alpha", _ask("openai-echo", marker)).status_code == 200
    seen = [r for r in received(fake_upstream) if marker in json.dumps(r["body"])]
    tenants = [r["headers"].get("x-tuneloop-tenant") for r in seen]
    assert tenants == ["alpha", "beta", None], tenants


def test_stream_cut_by_the_client_is_recorded_as_499_with_the_partial_text(hard):
    words = " ".join(f"w{i}" for i in range(60))  # ~20 chunks, 0.1 s apart
    got: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{hard.base_url}/chat/completions", json=_ask("slow-words", words, stream=True),
                      headers={"authorization": f"Bearer {hard.keys['alpha']}"}, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                got.append(json.loads(line[6:]))
            if sum(1 for c in got if c["choices"] and c["choices"][0]["delta"].get("content")) == 3:
                break  # leaving the block closes the connection mid-stream
    cid = got[0]["id"]
    rows = _records(hard, f"id = '{cid}'")
    assert rows and rows[0]["status"] == 499, rows
    record = rows[0]
    text = json.loads(record["response"])["choices"][0]["message"]["content"]
    relayed = "".join(c["choices"][0]["delta"].get("content") or "" for c in got if c["choices"])
    assert text.startswith(relayed) and len(text) < len(f"echo: {words}")  # partial: the rest was never made
    assert 3 <= record["completion_tokens"] < 20  # the deltas relayed, not the whole reply
    assert json.loads(record["error"])["code"] == "client_closed_request"
    # datasets never train on it
    assert sft_line(record["status"], json.loads(record["request"]), json.loads(record["response"]), None,
                    None) == (None, "failed")


def test_client_leaving_a_plain_request_is_recorded_as_499(hard):
    marker = uuid.uuid4().hex
    with pytest.raises(httpx.ReadTimeout):
        _chat(hard, "alpha", _ask("slow-reply", marker), timeout=0.5)
    rows = _records(hard, f"request like '%{marker}%'")
    assert rows and rows[0]["status"] == 499 and rows[0]["response"] is None
    # recorded when the client left, not when the upstream would have answered (3 s)
    assert rows[0]["latency_s"] < 2.5


def test_model_cards_show_no_paths_to_callers(hard):
    for who in ("alpha", "beta"):
        listed = httpx.get(f"{hard.base_url}/models", headers={"authorization": f"Bearer {hard.keys[who]}"})
        assert listed.status_code == 200
        text = listed.text
        assert SECRET_PATH not in text and "lora_path" not in text and "127.0.0.1" not in text
        card = next(c for c in listed.json()["data"] if c["id"] == "adapter")
        assert set(card) == {"id", "object", "created", "owned_by", "root", "parent", "shutdown_date"}
        assert card["root"] == "support-v9"
        one = httpx.get(f"{hard.base_url}/models/adapter", headers={"authorization": f"Bearer {hard.keys[who]}"})
        assert one.json() == card
    admin = httpx.get(f"{hard.base_url}/models/adapter", headers={"authorization": f"Bearer {hard.keys['admin']}"})
    assert admin.json()["routes"][0]["lora_path"] == SECRET_PATH  # operators still see routes


def test_errors_name_the_target_not_its_url(gateway):
    r = httpx.post(f"{gateway.base_url}/chat/completions", json=_ask("dead-bot"), timeout=10)
    assert r.status_code == 503
    message = r.json()["error"]["message"]
    assert "'dead'" in message and "127.0.0.1" not in message and "http" not in message


def test_a_user_header_that_is_not_utf8_is_a_400(gateway):
    """Issue 19 (low): it was a plain-text 500."""
    r = httpx.post(f"{gateway.base_url}/chat/completions", json=_ask("dead-bot"), timeout=10,
                   headers={"x-tuneloop-user": b"\xff\xfe caf\xe9"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-tuneloop-user", r.text


def test_a_huge_model_name_is_not_echoed_whole(hard):
    r = _chat(hard, "alpha", _ask("m" * 1_000_000))
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert len(message) < 400 and "…" in message


def test_a_body_that_trickles_in_gets_408(hard):
    key = hard.keys["alpha"].encode()
    with socket.create_connection(("127.0.0.1", hard.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"authorization: Bearer " + key + b"\r\ncontent-length: 100\r\n\r\n{\"model\":")
        started = time.monotonic()
        reply = s.recv(65536)
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b'"code":"request_timeout"' in reply and 0.5 < waited < 4


def test_headers_that_trickle_in_get_408(hard):
    with socket.create_connection(("127.0.0.1", hard.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408"), reply
