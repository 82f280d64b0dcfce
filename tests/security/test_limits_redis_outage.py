"""Per-key limits while Redis is away (``redis_failure``, gateway.limits_failover).

Real gateways (``tuneloop serve``, over loopback HTTP) share limits through a ``redis-server``
of their own on a free port, which the tests kill, restart on the same port, or hang (SIGSTOP):

- open (the default): while Redis is down every replica still enforces a key's rpm, on its
  own (two replicas: twice the limit between them); once Redis is back the replicas share
  one count again.
- closed (``TUNELOOP_REDIS_FAILURE=closed``): limited keys get 503 in OpenAI's envelope while
  Redis is down, and 200 again once it is back.
- a hung Redis costs a request about the client's timeout (0.5 s), not a hang, either way.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import ValidationError

from gateway.auth import Principal
from gateway.config import GatewayConfig
from gateway.errors import RateLimited
from gateway.limits_failover import FailoverLimiter
from gateway.limits_redis import RedisLimiter
from gateway.ratelimit import Ask, make_limiter
from gateway.settings import Settings
from tests.fixtures.gateway import GatewayProcess, free_port
from tests.security.test_limits import in_one_minute
from tests.security.usage_upstream import UsageUpstream

REDIS_SERVER = "/usr/bin/redis-server"
MSG = [{"role": "user", "content": "hello"}]
DOWN_LOG = "rate-limit store (Redis) unreachable"
BACK_LOG = "rate-limit store (Redis) answers again"
DEGRADED = "tuneloop_limits_degraded_requests_total"

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs redis-server")


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port; ``start`` again reuses the port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 10) -> None:
        with (self.folder / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.folder / "redis.log").read_text()[-2000:]
            try:
                if self.client().ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case it was stopped
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def upstream() -> Iterator[UsageUpstream]:
    server = UsageUpstream(free_port()).start()
    yield server
    server.stop()


def replicas(up: UsageUpstream, redis_url: str, tmp_path: Path, n: int = 1,
             env: dict[str, str] | None = None) -> list[GatewayProcess]:
    """n gateways on one Redis and one database (so the same keys), one after the other (at once,
    they would wait on each other's migration of the new database)."""
    cfg = {"database_url": f"sqlite:///{tmp_path / 'shared.db'}", "redis_url": redis_url,
           "targets": {"up": {"kind": "vllm", "base_urls": [up.base_url], "timeout_s": 10}},
           "models": {"fast": {"routes": [{"target": "up", "model": "usage-10"}]}}}
    env = {"TUNELOOP_AUTH": "required", **(env or {})}
    gws = [GatewayProcess(cfg, tmp_path / f"gw{i}", env=env) for i in range(n)]
    gws[0].admin = gws[0].make_key("--project", "ops", "--admin")
    return gws


class Cluster:
    """Replicas of one policy on a Redis of their own, for the module (a gateway takes seconds
    to start); ``heal`` brings Redis back and waits until every replica uses it again."""

    def __init__(self, up: UsageUpstream, folder: Path, n: int, env: dict[str, str]) -> None:
        self.policy = env.get("TUNELOOP_REDIS_FAILURE", "open")
        self.redis = RedisServer(folder / "redis")
        self.gws = replicas(up, self.redis.url, folder, n, env=env)
        self.probe, _ = new_key(self.gws[0], rpm=1_000_000)

    def heal(self) -> None:
        assert self.redis.proc is not None
        self.redis.proc.send_signal(signal.SIGCONT)
        if self.redis.proc.poll() is not None:
            self.redis.start()
        for gw in self.gws:
            wait_store_up(gw, self.probe)

    def close(self) -> None:
        with ThreadPoolExecutor(len(self.gws)) as pool:
            list(pool.map(GatewayProcess.stop, self.gws))
        self.redis.kill()


@pytest.fixture(scope="module")
def open_cluster(upstream, tmp_path_factory) -> Iterator[Cluster]:
    """Two replicas with the default, redis_failure: open."""
    cluster = Cluster(upstream, tmp_path_factory.mktemp("open"), 2, env={})
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def closed_cluster(upstream, tmp_path_factory) -> Iterator[Cluster]:
    """One replica with TUNELOOP_REDIS_FAILURE=closed."""
    cluster = Cluster(upstream, tmp_path_factory.mktemp("closed"), 1, env={"TUNELOOP_REDIS_FAILURE": "closed"})
    yield cluster
    cluster.close()


@pytest.fixture(params=["open", "closed"])
def cluster(request) -> Cluster:
    return request.getfixturevalue(f"{request.param}_cluster")


def new_key(gw: GatewayProcess, **limits: float) -> tuple[str, str]:
    """(secret, id) of a new key with ``limits``."""
    resp = httpx.post(f"{gw.base_url}/admin/keys", headers={"authorization": f"Bearer {gw.admin}"},
                      json={"project": f"p-{uuid.uuid4().hex[:8]}", "limits": limits})
    assert resp.status_code == 200, resp.text
    return resp.json()["key"], resp.json()["id"]


def chat(gw: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json={"model": "fast", "messages": MSG, "max_tokens": 2},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    """A sample of ``name`` with exactly ``labels`` from the gateway's /metrics (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    text = httpx.get(f"{gw.root}/metrics", timeout=5).text
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:{{(.*)}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


def wait_until(ok: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ok():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def wait_store_up(gw: GatewayProcess, probe: str) -> None:
    """Requests (of a key with room to spare) until the replica has found Redis again."""
    wait_until(lambda: chat(gw, probe).status_code == 200 and metric(gw, "tuneloop_limits_store_up") == 1,
               f"{gw.root} uses Redis again")


def logged(gw: GatewayProcess) -> tuple[int, int]:
    """How many times the replica logged that Redis went down, and that it came back."""
    text = gw.log_path.read_text()
    return text.count(DOWN_LOG), text.count(BACK_LOG)


def test_open_each_replica_enforces_the_limit_while_redis_is_down_then_shares_it_again(open_cluster):
    open_cluster.heal()
    gws, server = open_cluster.gws, open_cluster.redis
    logs = [logged(gw) for gw in gws]
    degraded = [metric(gw, DEGRADED, policy="open", outcome="admitted") for gw in gws]

    def shared_rpm() -> list[int]:
        key, key_id = new_key(gws[0], rpm=3)
        minute = int(time.time() // 60)
        got = [chat(gw, key).status_code for _ in range(3) for gw in gws]  # alternating replicas
        if minute == int(time.time() // 60):  # else in_one_minute runs it again
            assert server.client().get(f"tuneloop:rl:{key_id}:r:{minute}") == b"3"
        return got

    up = in_one_minute(shared_rpm)  # one count through Redis: 3 of the 6 get in
    assert up.count(200) == 3 and up.count(429) == 3, up

    server.kill()

    def alone() -> list[list[int]]:
        key, _ = new_key(gws[0], rpm=3)
        return [[chat(gw, key).status_code for _ in range(4)] for gw in gws]

    for got in in_one_minute(alone):  # each replica: 3, then 429 (so 2x the limit in all)
        assert got == [200, 200, 200, 429], got
    for gw, before in zip(gws, degraded, strict=True):
        assert metric(gw, "tuneloop_limits_store_up") == 0
        assert metric(gw, DEGRADED, policy="open", outcome="admitted") >= before + 3
        assert metric(gw, DEGRADED, policy="open", outcome="limited") >= 1
        assert metric(gw, "tuneloop_limits_store_errors_total", op="admit") >= 1

    server.start()  # the same port, empty
    open_cluster.heal()
    up = in_one_minute(shared_rpm)
    assert up.count(200) == 3 and up.count(429) == 3, up
    for gw, (down, back) in zip(gws, logs, strict=True):  # one warning each way, not one per request
        assert logged(gw) == (down + 1, back + 1), gw.log_path.read_text()[-3000:]


def test_closed_refuses_with_503_while_redis_is_down(closed_cluster):
    closed_cluster.heal()
    [gw] = closed_cluster.gws
    limited, _ = new_key(gw, rpm=100_000)
    unlimited, _ = new_key(gw)
    refused = metric(gw, DEGRADED, policy="closed", outcome="refused")
    assert chat(gw, limited).status_code == 200
    closed_cluster.redis.kill()

    for _ in range(3):
        resp = chat(gw, limited)
        assert resp.status_code == 503, resp.text
        assert resp.json() == {"error": {
            "message": "The rate-limit store is unavailable (Redis is unreachable) and this gateway is "
                       "configured to fail closed (redis_failure: closed). Retry shortly.",
            "type": "server_error", "param": None, "code": "limits_unavailable"}}
        assert resp.headers["retry-after"] == "1"
    assert chat(gw, unlimited).status_code == 200  # no limits: nothing to check
    assert metric(gw, DEGRADED, policy="closed", outcome="refused") == refused + 3
    assert metric(gw, "tuneloop_limits_store_up") == 0

    closed_cluster.redis.start()
    wait_until(lambda: chat(gw, limited).status_code == 200, "200 again once Redis is back")
    assert metric(gw, "tuneloop_limits_store_up") == 1


def test_a_hung_redis_costs_a_request_its_timeout_not_a_hang(cluster):
    cluster.heal()
    gw, proc = cluster.gws[0], cluster.redis.proc
    status = {"open": 200, "closed": 503}[cluster.policy]
    key, _ = new_key(gw, rpm=100_000)
    errors = metric(gw, "tuneloop_limits_store_errors_total", op="admit")
    assert proc is not None and chat(gw, key).status_code == 200
    proc.send_signal(signal.SIGSTOP)
    try:
        started, slowest = time.monotonic(), 0.0
        while time.monotonic() - started < 1.8:  # past the 1 s backoff: Redis is tried again
            t = time.monotonic()
            resp = chat(gw, key)
            slowest = max(slowest, time.monotonic() - t)
            assert resp.status_code == status, resp.text
        assert slowest < 2.0, slowest
        with ThreadPoolExecutor(8) as pool:  # at once: none waits on another's timeout
            t = time.monotonic()
            assert {r.status_code for r in pool.map(lambda _: chat(gw, key), range(8))} == {status}
            assert time.monotonic() - t < 2.0
        assert metric(gw, "tuneloop_limits_store_errors_total", op="admit") >= errors + 2  # the first, a retry
    finally:
        proc.send_signal(signal.SIGCONT)
    cluster.heal()


def test_the_policy_is_read_from_the_config_and_the_environment(monkeypatch):
    assert GatewayConfig().redis_failure == "open"
    assert GatewayConfig.model_validate({"redis_failure": "closed"}).redis_failure == "closed"
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"redis_failure": "shut"})
    assert Settings().redis_failure is None  # the config's applies
    monkeypatch.setenv("TUNELOOP_REDIS_FAILURE", "closed")
    assert Settings().redis_failure == "closed"
    limiter = make_limiter("redis://127.0.0.1:1/0", "closed")
    assert isinstance(limiter, FailoverLimiter) and limiter.policy == "closed"


def test_a_reservation_is_settled_by_the_store_that_admitted_it(tmp_path):
    server = RedisServer(tmp_path / "redis")
    p = Principal(key_id=f"k-{uuid.uuid4().hex[:10]}", project="x", limits={"max_concurrency": 1})

    async def run() -> None:
        lim = FailoverLimiter(RedisLimiter(server.url), "open", backoff_s=0.0)  # every call tries Redis
        in_redis = await lim.admit(p, Ask())
        assert not in_redis.fallback
        server.kill()
        in_memory = await lim.admit(p, Ask())  # Redis's slot is out of reach: memory counts its own
        assert in_memory.fallback and not lim.up
        with pytest.raises(RateLimited, match="concurrent"):  # and holds the key's cap of 1
            await lim.admit(p, Ask())
        await lim.settle(in_redis, 0, 0.0)  # Redis is down: dropped, not raised
        server.start()  # empty
        await lim.settle(in_memory, 0, 0.0)  # back to memory (Redis never saw it)
        assert lim.memory.inflight == {}
        again = await lim.admit(p, Ask())
        assert not again.fallback and lim.up
        await lim.settle(again, 0, 0.0)
        assert server.client().zcard(f"tuneloop:rl:{p.key_id}:slots") == 0
        await lim.aclose()

    try:
        asyncio.run(run())
    finally:
        server.kill()
