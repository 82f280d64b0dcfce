"""Per-key limits that hold under concurrency: reserve the worst case at admission, settle after.

Two layers: each limiter (memory, the SQLite file shared by workers, Redis) driven directly
with many concurrent admissions; then real gateways (``tuneloop serve``, in-memory and
Redis, one and two workers) with 20 concurrent requests against an upstream whose every
reply uses its whole max_tokens (``usage_upstream``): what the 200s report as used must stay
within 1.2x of the key's tpm, USD and rpm limits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TypeVar

import httpx
import pytest
from typer.testing import CliRunner

from gateway.auth import Principal
from gateway.errors import RateLimited
from gateway.keys_cli import app as keys_app
from gateway.limits_redis import RedisLimiter
from gateway.limits_sqlite import SqliteLimiter
from gateway.ratelimit import Ask, MemoryLimiter
from tests.fixtures.gateway import GatewayProcess, free_port
from tests.security.usage_upstream import UsageUpstream

REDIS = "redis://127.0.0.1:6379/0"
MSG = [{"role": "user", "content": "hello world"}]
T = TypeVar("T")
PRICES = {"input": 1000.0, "output": 3000.0}  # USD per 1M tokens: a few requests spend $0.05


def principal(**limits: float) -> Principal:
    return Principal(key_id=f"k-{uuid.uuid4().hex[:10]}", project="limits", limits=limits)


def in_one_minute(run: Callable[[], T]) -> T:
    """``run()`` inside one rate-limit minute: run again if the minute rolled over meanwhile."""
    while True:
        start = time.time()
        out = run()
        if int(start // 60) == int(time.time() // 60):
            return out


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_limiter(request, tmp_path):
    """A factory: the Redis client binds to the event loop of the test's ``asyncio.run``. These tests check
    what concurrent reservations add up to, not timeouts (tests/security/test_limits_redis_outage.py does):
    50 connections opened at once on a loaded CI box can take longer than the gateway's 0.5 s to connect."""
    return {"memory": MemoryLimiter, "sqlite": lambda: SqliteLimiter(str(tmp_path / "limits.sqlite")),
            "redis": lambda: RedisLimiter(REDIS, timeout_s=5.0)}[request.param]


async def _admit_all(lim, p: Principal, asks: list[Ask]) -> list:
    async def one(ask: Ask):
        try:
            return await lim.admit(p, ask)
        except RateLimited as exc:
            return exc
    return await asyncio.gather(*(one(a) for a in asks))


def test_concurrent_reservations_never_pass_the_limit(make_limiter):
    async def run() -> None:
        p = principal(tpm=100, usd_per_day=0.05, rpm=1000)
        lim = make_limiter()
        got = await _admit_all(lim, p, [Ask(tokens=21, usd=0.011) for _ in range(50)])
        admitted = [r for r in got if not isinstance(r, Exception)]
        assert len(admitted) == 4  # 4 × 21 tokens fit in 100, a fifth would not ($0.044 of $0.05)
        refused = [r for r in got if isinstance(r, RateLimited)]
        assert len(refused) == 46 and int(refused[0].headers["retry-after"]) >= 1
        assert min(int(dict(r.headers)[b"x-ratelimit-remaining-tokens"]) for r in admitted) == 16
        for res in admitted:  # each used 13 tokens and $0.009 of its reservation
            await lim.settle(res, 13, 0.009)
        # 52 tokens used: two more would fit in tpm, but $0.036 spent leaves room for one $0.011
        got = await _admit_all(lim, p, [Ask(tokens=21, usd=0.011) for _ in range(50)])
        assert sum(not isinstance(r, Exception) for r in got) == 1
        await lim.aclose()

    in_one_minute(lambda: asyncio.run(run()))


def test_refused_requests_reserve_nothing_and_slots_come_back(make_limiter):
    p = principal(max_concurrency=2, usd_per_day=1.0)

    async def run() -> None:
        lim = make_limiter()
        a = await lim.admit(p, Ask(usd=0.4))
        b = await lim.admit(p, Ask(usd=0.4))
        with pytest.raises(RateLimited, match="concurrent"):
            await lim.admit(p, Ask(usd=0.1))
        await lim.settle(a, 0, 0.0)  # an error: nothing used, the slot and the $0.4 come back
        c = await lim.admit(p, Ask(usd=0.5))
        await lim.settle(b, 0, 0.4)
        await lim.settle(c, 0, 0.5)  # $0.9 spent
        with pytest.raises(RateLimited) as err:
            await lim.admit(p, Ask(usd=0.2))
        assert err.value.code == "insufficient_quota" and "budget" in err.value.message
        await lim.settle(await lim.admit(p, Ask(usd=0.1)), 0, 0.1)
        await lim.aclose()

    asyncio.run(run())


def test_a_dead_replicas_slot_frees_itself_when_its_lease_ends(tmp_path):
    p = principal(max_concurrency=1)

    async def run(lim) -> None:
        await lim.admit(p, Ask(lease_s=0.3))  # never settled: its process died
        with pytest.raises(RateLimited):
            await lim.admit(p, Ask(lease_s=0.3))
        await asyncio.sleep(0.4)
        await lim.settle(await lim.admit(p, Ask(lease_s=0.3)), 0, 0.0)
        await lim.aclose()

    asyncio.run(run(RedisLimiter(REDIS)))
    asyncio.run(run(SqliteLimiter(str(tmp_path / "limits.sqlite"))))


# ---- through real gateways ----------------------------------------------------------------


@pytest.fixture(scope="module")
def usage_upstream():
    server = UsageUpstream(free_port()).start()
    yield server
    server.stop()


def limits_config(up: UsageUpstream, **extra) -> dict:
    return {"targets": {"priced": {"kind": "vllm", "base_urls": [up.base_url], "prices": PRICES, "timeout_s": 10},
                        "unpriced": {"kind": "vllm", "base_urls": [up.base_url], "timeout_s": 10},
                        "dead": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{free_port()}/v1"],
                                 "timeout_s": 2}},
            "models": {"paid": {"routes": [{"target": "priced", "model": "usage-200"}]},
                       "free": {"routes": [{"target": "unpriced", "model": "usage-200"}]},
                       "slow-stream": {"routes": [{"target": "unpriced", "model": "usage-100"}]},
                       "dead-bot": {"routes": [{"target": "dead", "model": "x"}], "retries": 0}},
            **extra}


@pytest.fixture(scope="module", params=["memory", "redis"])
def limited(request, usage_upstream, tmp_path_factory):
    extra = {"redis_url": REDIS, "default_prices": PRICES} if request.param == "redis" else {}
    gw = GatewayProcess(limits_config(usage_upstream, **extra), tmp_path_factory.mktemp(f"limits-{request.param}"),
                        env={"TUNELOOP_AUTH": "required"})
    gw.admin = gw.make_key("--project", "ops", "--admin")
    gw.kind = request.param
    yield gw
    gw.stop()


def new_key(gw: GatewayProcess, **limits: float) -> str:
    resp = httpx.post(f"{gw.base_url}/admin/keys", headers={"authorization": f"Bearer {gw.admin}"},
                      json={"project": f"p-{uuid.uuid4().hex[:8]}", "limits": limits})
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


def burst(gw: GatewayProcess, key: str, n: int = 20, **body) -> list[httpx.Response]:
    """n requests at once, each on its own connection."""
    payload = {"model": "paid", "messages": MSG, "max_tokens": 10, **body}

    def one(_: int) -> httpx.Response:
        return httpx.post(f"{gw.base_url}/chat/completions", json=payload, timeout=30,
                          headers={"authorization": f"Bearer {key}"})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def spent(responses: list[httpx.Response]) -> tuple[int, float]:
    ok = [r for r in responses if r.status_code == 200]
    return (sum(r.json()["usage"]["total_tokens"] for r in ok),
            sum(float(r.headers["x-tuneloop-cost-usd"]) for r in ok))


def test_20_concurrent_requests_stay_within_tpm(limited):
    responses = in_one_minute(lambda: burst(limited, new_key(limited, tpm=100)))
    tokens, _ = spent(responses)
    assert 0 < tokens <= 1.2 * 100, [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert refused and refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-ratelimit-remaining-tokens" in refused[0].headers and "retry-after" in refused[0].headers


def test_20_concurrent_requests_stay_within_a_daily_budget(limited):
    responses = burst(limited, new_key(limited, usd_per_day=0.05), max_tokens=2)
    _, usd = spent(responses)
    assert 0 < usd <= 1.2 * 0.05, [r.status_code for r in responses]
    assert [r for r in responses if r.status_code == 429][0].json()["error"]["code"] == "insufficient_quota"


def test_20_concurrent_requests_stay_within_rpm(limited):
    responses = in_one_minute(lambda: burst(limited, new_key(limited, rpm=5)))
    assert sum(r.status_code == 200 for r in responses) == 5


def test_a_request_that_can_never_fit_is_told_so(limited, usage_upstream):
    key = new_key(limited, tpm=100)
    resp = burst(limited, key, n=1, max_tokens=None)[0]  # no max_tokens: 1,024 reserved
    assert resp.status_code == 429 and "Request too large" in resp.json()["error"]["message"]
    ok = burst(limited, new_key(limited, tpm=5000), n=1, max_tokens=None)[0]
    assert ok.json()["usage"]["completion_tokens"] == 1024  # the upstream got max_tokens: 1024


def test_usd_budget_on_an_unpriced_model(limited):
    key = new_key(limited, usd_per_day=1.0)
    resp = burst(limited, key, n=1, model="free")[0]
    if limited.kind == "memory":  # no default_prices: the budget could not be enforced there
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "unpriced_model"
        assert burst(limited, new_key(limited, rpm=100), n=1, model="free")[0].status_code == 200
    else:  # default_prices apply: charged like the priced target
        assert resp.status_code == 200
        usage = resp.json()["usage"]
        expected = (usage["prompt_tokens"] * PRICES["input"] + usage["completion_tokens"] * PRICES["output"]) / 1e6
        assert float(resp.headers["x-tuneloop-cost-usd"]) == pytest.approx(expected)


def test_concurrency_cap_counts_streams_and_frees_on_disconnect_and_error(limited):
    key = new_key(limited, max_concurrency=2)
    auth = {"authorization": f"Bearer {key}"}
    body = {"model": "slow-stream", "messages": MSG, "max_tokens": 20, "stream": True}  # ~2 s each
    url = f"{limited.base_url}/chat/completions"
    with httpx.Client(timeout=30) as client, ExitStack() as held:
        for _ in range(2):
            assert held.enter_context(client.stream("POST", url, json=body, headers=auth)).status_code == 200
        over = httpx.post(url, json={**body, "stream": False}, headers=auth, timeout=30)
        assert over.status_code == 429 and "concurrent" in over.json()["error"]["message"]
    # both clients went away mid-stream
    deadline, status = time.time() + 10, None
    while time.time() < deadline and status != 200:  # freed once the gateway sees the stream end
        status = httpx.post(url, json={**body, "stream": False, "max_tokens": 1}, headers=auth, timeout=30).status_code
        time.sleep(0.2)
    assert status == 200
    for _ in range(4):  # upstream failures release their slot too
        resp = httpx.post(url, json={"model": "dead-bot", "messages": MSG}, headers=auth, timeout=30)
        assert resp.status_code in (502, 503), resp.text


def test_two_workers_enforce_one_rpm_limit(usage_upstream, tmp_path):
    gw = GatewayProcess(limits_config(usage_upstream), tmp_path, env={"TUNELOOP_AUTH": "required"},
                        args=["--workers", "2"])
    try:
        gw.admin = gw.make_key("--project", "ops", "--admin")
        responses = in_one_minute(lambda: burst(gw, new_key(gw, rpm=6), n=40))
        assert sum(r.status_code == 200 for r in responses) == 6
        assert (tmp_path / "limits.sqlite").exists()
    finally:
        assert gw.stop() == 0


def test_keys_create_refuses_a_budget_that_no_price_can_enforce(tmp_path, usage_upstream):
    import yaml

    runner = CliRunner()
    env = {"TUNELOOP_HOME": str(tmp_path)}
    bare = limits_config(usage_upstream)
    del bare["targets"]["priced"]["prices"]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    refused = runner.invoke(keys_app, ["create", "--project", "x", "--usd-per-day", "1", "-c",
                                       str(tmp_path / "bare.yaml")], env=env)
    assert refused.exit_code == 2 and "no target in the config has `prices`" in refused.output
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(limits_config(usage_upstream)))
    made = runner.invoke(keys_app, ["create", "--project", "x", "--usd-per-day", "1", "--max-concurrency", "3",
                                    "-c", str(tmp_path / "mixed.yaml")], env=env)
    assert made.exit_code == 0 and "free" in made.output and "refused (403)" in made.output
    assert made.output.strip().splitlines()[-1].startswith("tl-")
