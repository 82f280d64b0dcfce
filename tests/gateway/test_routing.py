"""Routing and resilience against real failing upstreams on loopback."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import openai
import pytest

from tests.fixtures.gateway import received

MSG = [{"role": "user", "content": "hello there"}]


def _arm(client: httpx.Client, url: str, user: str | None = None) -> str:
    body = {"model": "canary", "messages": MSG, **({"user": user} if user else {})}
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    return r.headers["x-tuneloop-arm"]


def test_canary_split_follows_the_weights(gateway):
    with httpx.Client(timeout=10) as client:
        arms = Counter(_arm(client, f"{gateway.base_url}/chat/completions") for _ in range(2000))
    share = arms["fake-vllm/candidate"] / 2000
    assert abs(share - 0.10) <= 0.03, arms


def test_canary_is_sticky_per_user(gateway):
    url = f"{gateway.base_url}/chat/completions"
    with httpx.Client(timeout=10) as client:
        for user in ("alice", "bob", "carol"):
            assert len({_arm(client, url, user) for _ in range(15)}) == 1
        users = {_arm(client, url, f"user-{i}") for i in range(200)}
    assert users == {"fake-vllm/stable", "fake-vllm/candidate"}


def test_breaker_opens_skips_without_waiting_and_recovers(gateway):
    client = gateway.client()
    for _ in range(2):  # two replica faults in a row open the breaker of the `fragile` target
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="fragile-502", messages=MSG)
        assert err.value.status_code == 502
    started = time.perf_counter()
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="fragile-ok", messages=MSG)
    assert err.value.status_code == 503 and "circuit open" in err.value.message
    assert time.perf_counter() - started < 0.5
    time.sleep(1.1)  # cooldown: the next request is the half-open probe, and it succeeds
    assert client.chat.completions.create(model="fragile-ok", messages=MSG).choices
    assert client.chat.completions.create(model="fragile-ok", messages=MSG).choices


def test_429_is_retried_after_retry_after_then_falls_back(gateway, fake_upstream, upstream_requests):
    started = time.perf_counter()
    raw = gateway.client().chat.completions.with_raw_response.create(model="retry-429", messages=MSG)
    elapsed = time.perf_counter() - started
    models = [r["body"]["model"] for r in received(fake_upstream)]
    assert models == ["fake-error-429"] * 3 + ["support-v3"]
    assert elapsed >= 2.0  # two waits of retry-after: 1
    assert raw.headers["x-tuneloop-target"] == "fake-vllm"


def test_a_down_replica_is_skipped(gateway):
    client = gateway.client()
    for _ in range(10):
        assert client.chat.completions.create(model="half-dead-bot", messages=MSG).choices


def test_time_to_first_token_timeout(gateway):
    started = time.perf_counter()
    with pytest.raises(openai.InternalServerError) as err:
        list(gateway.client().chat.completions.create(model="slow-first-token", messages=MSG,
                                                      stream=True))
    assert err.value.status_code == 504
    assert time.perf_counter() - started < 1.8


def _counter(gateway, name: str, alias: str) -> float:
    """A counter's value for one alias, read from the samples (not the # HELP line)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway.root}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and s.labels.get("model") == alias)


def _reloads(gateway, source: str, result: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway.root}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "tuneloop_route_reloads_total" and s.labels == {"source": source, "result": result})


def _wait_refused(gateway, source: str, before: float) -> None:
    """Until the gateway has read an invalid edit and refused it (not a fixed sleep)."""
    deadline = time.time() + 10
    while _reloads(gateway, source, "invalid") <= before:
        assert time.time() < deadline, f"the gateway never read the invalid {source} edit"
        time.sleep(0.1)


def test_retry_and_fallback_metrics(gateway):
    before = [_counter(gateway, n, "retry-429") for n in ("tuneloop_retries_total", "tuneloop_fallbacks_total")]
    gateway.client().chat.completions.create(model="retry-429", messages=MSG)
    after = [_counter(gateway, n, "retry-429") for n in ("tuneloop_retries_total", "tuneloop_fallbacks_total")]
    assert after[0] >= before[0] + 2 and after[1] >= before[1] + 1, (before, after)


def test_shadow_traffic_is_logged_beside_the_primary(gateway, fake_upstream, upstream_requests):
    from gateway.store.db import create_engine
    from gateway.store.interactions import LogStore

    made = gateway.client().chat.completions.create(model="shadowed", messages=MSG)
    assert made.model == "live-v1"  # the user's reply is the primary's
    store = LogStore(create_engine(f"sqlite:///{gateway.home}/tuneloop.db"))
    deadline = time.time() + 10
    while (shadow := store.record(f"{made.id}-shadow-fake-vllm")) is None and time.time() < deadline:
        time.sleep(0.1)
    assert shadow is not None, "the shadow record reached the log"
    assert shadow["kind"] == "shadow" and shadow["parent_id"] == made.id
    assert shadow["upstream_model"] == "candidate-v2" and shadow["response"]["choices"]
    assert sorted(r["body"]["model"] for r in received(fake_upstream)) == ["candidate-v2", "live-v1"]


def test_config_reloads_live_without_dropping_in_flight(fake_upstream, tmp_path):
    import threading

    import yaml

    from tests.fixtures.gateway import GatewayProcess, fake_config

    config = fake_config(fake_upstream)
    gw = GatewayProcess(config, tmp_path)
    try:
        client = gw.client()
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="brand-new", messages=MSG)
        slow: list = []
        config["models"]["slow"] = {"routes": [{"target": "fake-vllm", "model": "fake-slow-2"}]}
        gw.config_path.write_text(yaml.safe_dump(config))
        deadline = time.time() + 10
        while time.time() < deadline:  # wait for the watcher to pick up "slow"
            try:
                client.models.retrieve("slow")
                break
            except openai.NotFoundError:
                time.sleep(0.2)
        t = threading.Thread(target=lambda: slow.append(
            client.chat.completions.create(model="slow", messages=MSG)))
        t.start()
        time.sleep(0.3)  # the slow request is in flight while the config changes again
        config["models"]["brand-new"] = {"routes": [{"target": "fake-vllm", "model": "fresh"}]}
        config["targets"]["fake-vllm"]["timeout_s"] = 5  # a changed target gets a new provider
        gw.config_path.write_text(yaml.safe_dump(config))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                assert client.chat.completions.create(model="brand-new", messages=MSG).model == "fresh"
                break
            except openai.NotFoundError:
                time.sleep(0.2)
        else:
            pytest.fail("the new model never appeared")
        t.join(10)
        assert slow and slow[0].choices[0].message.content.startswith("echo:")
        refused = _reloads(gw, "file", "invalid")
        gw.config_path.write_text("models: [not, a, mapping")  # a broken edit changes nothing
        _wait_refused(gw, "file", refused)
        assert client.chat.completions.create(model="brand-new", messages=MSG).model == "fresh"
    finally:
        gw.stop()


def test_routes_written_to_the_database_reach_every_replica(fake_upstream, tmp_path):
    from gateway.store.db import create_engine
    from gateway.store.routes import RouteStore
    from tests.fixtures.gateway import GatewayProcess, fake_config

    config = fake_config(fake_upstream)
    config["database_url"] = f"sqlite:///{tmp_path}/shared.db"
    replicas = [GatewayProcess(config, tmp_path / f"r{i}") for i in range(2)]
    try:
        store = RouteStore(create_engine(config["database_url"]))
        store.put("lora-bot", {"routes": [{"target": "fake-vllm", "model": "support-v4"}]})
        for gw in replicas:
            deadline = time.time() + 10
            while gw.client().chat.completions.create(model="lora-bot", messages=MSG).model != "support-v4":
                assert time.time() < deadline, "the replica never followed the database"
                time.sleep(0.2)
        refused = _reloads(replicas[0], "database", "invalid")
        store.put("lora-bot", {"routes": [{"target": "nowhere", "model": "x"}]})  # invalid: ignored
        _wait_refused(replicas[0], "database", refused)
        assert replicas[0].client().chat.completions.create(model="lora-bot", messages=MSG).model == "support-v4"
    finally:
        for gw in replicas:
            gw.stop()


def test_a_reload_that_brings_the_first_openai_target_imports_its_sdk_off_the_event_loop(tmp_path):
    """The openai SDK is loaded only when a target of its kind exists (about half a second of import): a
    config reload that adds the first one loads it in a thread, so requests in flight do not stop for it."""
    script = r"""
import asyncio, sys, threading
from pathlib import Path
seen = []
sys.addaudithook(lambda event, args: seen.append(threading.current_thread() is threading.main_thread())
                 if event == "import" and args[0] == "openai" else None)
from gateway.app import Routes
from gateway.config import GatewayConfig
from gateway.reload import watch_config
path = Path(sys.argv[1])
vllm = '{"targets": {"v": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}}, "models": {}'
path.write_text(vllm + "}")

async def main():
    routes = Routes(GatewayConfig.load(path))
    watcher = asyncio.create_task(watch_config(routes, path, interval_s=0.05))
    await asyncio.sleep(0.2)
    path.write_text(vllm[:-len(', "models": {}') - 1]
                    + ', "o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}, "models": {}}')
    for _ in range(200):
        if "o" in routes.router.providers:
            break
        await asyncio.sleep(0.05)
    watcher.cancel()
    assert "o" in routes.router.providers, "the reload never happened"
    assert "openai" in sys.modules and seen == [False], seen  # imported once, not on the loop's thread
    print("ok")

asyncio.run(main())
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "config.json")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
