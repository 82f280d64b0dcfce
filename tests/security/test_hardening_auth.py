"""Anonymous is never admin, auth off only on purpose, revocation within a second across replicas.

Real gateways (``tuneloop serve`` subprocesses); keys are made through the real ``KeyStore``
on the database the gateways use.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.store import db
from gateway.store.keys import KeyStore
from tests.fixtures.database import reset_postgres
from tests.fixtures.gateway import GatewayProcess, fake_config

MSG = [{"role": "user", "content": "hello"}]
CHAT = {"model": "lora-bot", "messages": MSG, "max_tokens": 5}


def key_store(url: str) -> KeyStore:
    engine = db.create_engine(url)
    db.upgrade(engine)
    return KeyStore(engine)


def home_db(home: Path) -> str:
    return db.default_database_url(home)


def bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def attack(gw: GatewayProcess, key: str | None = None) -> dict[str, int]:
    """What an anonymous (or ``key``) caller gets from the admin and cross-project routes."""
    h = bearer(key)
    return {
        "list keys": httpx.get(f"{gw.base_url}/admin/keys", headers=h).status_code,
        "mint admin key": httpx.post(f"{gw.base_url}/admin/keys", headers=h,
                                     json={"project": "evil", "admin": True}).status_code,
        "routes": httpx.get(f"{gw.base_url}/admin/routes", headers=h).status_code,
    }


def wait_status(call, want: int, timeout: float) -> float:
    """Poll ``call()`` until it answers ``want``; the seconds that took."""
    t0 = time.monotonic()
    while True:
        status = call().status_code
        if status == want:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"still {status} after {timeout} s (want {want})"
        time.sleep(0.05)


def test_without_keys_anonymous_works_but_is_not_admin_and_the_first_key_turns_auth_on(fake_upstream, tmp_path):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path)
    try:
        assert "auth: auto on loopback: no API keys yet" in gw.log_path.read_text()
        assert attack(gw) == {"list keys": 403, "mint admin key": 403, "routes": 403}
        made = httpx.post(f"{gw.base_url}/chat/completions", json={**CHAT, "store": True})
        assert made.status_code == 200  # anonymous traffic still works: project "default"
        listed = httpx.get(f"{gw.base_url}/chat/completions")
        assert listed.status_code == 200 and made.json()["id"] in [c["id"] for c in listed.json()["data"]]

        store = key_store(home_db(gw.home))  # `tuneloop keys create` does exactly this
        _, admin = store.create("ops", admin=True)
        _, alpha = store.create("alpha")
        wait_status(lambda: httpx.get(f"{gw.base_url}/chat/completions"), 401, timeout=10)
        assert attack(gw) == {"list keys": 401, "mint admin key": 401, "routes": 401}
        assert httpx.post(f"{gw.base_url}/chat/completions", json=CHAT).status_code == 401
        assert httpx.post(f"{gw.base_url}/chat/completions", json=CHAT,
                          headers=bearer("tl-made-up")).status_code == 401
        assert attack(gw, alpha) == {"list keys": 403, "mint admin key": 403, "routes": 403}
        # right after: the tenants with keys are served
        assert httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers=bearer(alpha)).status_code == 200
        assert httpx.get(f"{gw.base_url}/admin/keys", headers=bearer(admin)).status_code == 200
    finally:
        gw.stop()


def test_a_key_in_the_database_at_start_means_every_request_needs_one(fake_upstream, tmp_path):
    _, alpha = key_store(home_db(tmp_path)).create("alpha")
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path)  # auth: auto, on loopback
    try:
        assert "the database holds API keys, so every request needs one" in gw.log_path.read_text()
        assert attack(gw) == {"list keys": 401, "mint admin key": 401, "routes": 401}
        listed = httpx.get(f"{gw.base_url}/chat/completions")  # every project's completions
        assert listed.status_code == 401 and listed.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{gw.base_url}/chat/completions", headers=bearer(alpha)).status_code == 200
    finally:
        gw.stop()


def test_auth_off_only_when_set_and_said_loudly(fake_upstream, tmp_path):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path / "off", env={"TUNELOOP_AUTH": "none"})
    try:
        text = gw.log_path.read_text()
        assert "auth: off (set explicitly)" in text
        warning = next(line for line in text.splitlines() if "auth is OFF" in line)
        assert '"level": "warning"' in warning and "anyone who can reach this port is an admin" in warning
        assert httpx.get(f"{gw.base_url}/admin/keys").status_code == 200
    finally:
        gw.stop()
    # YAML reads a bare `auth: off` as false: still explicit, still off
    assert GatewayConfig.model_validate(yaml.safe_load("auth: off")).auth == "off"
    with pytest.raises(RuntimeError, match="unknown auth mode"):
        GatewayProcess(fake_config(fake_upstream), tmp_path / "typo", env={"TUNELOOP_AUTH": "of"})


@pytest.mark.postgres
def test_revocation_takes_effect_at_once_here_and_within_a_second_on_another_replica(
        fake_upstream, postgres_database, tmp_path):
    reset_postgres(postgres_database)
    store = key_store(postgres_database)
    _, admin = store.create("ops", admin=True)
    victim, secret = store.create("alpha")
    _, other = store.create("beta")
    config = {**fake_config(fake_upstream), "database_url": postgres_database}
    one, two = (GatewayProcess(config, tmp_path / name, env={"TUNELOOP_AUTH": "required"})
                for name in ("one", "two"))
    try:
        models = {gw: (lambda gw=gw, k=secret: httpx.get(f"{gw.base_url}/models", headers=bearer(k)))
                  for gw in (one, two)}
        assert all(call().status_code == 200 for call in models.values())  # cached on both replicas
        revoked = httpx.delete(f"{one.base_url}/admin/keys/{victim['id']}", headers=bearer(admin))
        assert revoked.status_code == 200 and revoked.json()["deleted"] is True
        assert models[one]().status_code == 401  # the replica that revoked: at once
        took = wait_status(models[two], 401, timeout=1.5)  # the other: within the 1 s cache, plus a poll
        print(f"revocation seen by the other replica after {took:.2f} s")
        for gw in (one, two):  # another tenant, right after
            ok = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers=bearer(other))
            assert ok.status_code == 200
    finally:
        one.stop()
        two.stop()


def test_a_key_made_by_another_process_is_honoured_at_once(tmp_path):
    """Auth ``auto`` remembers "no key exists" for a second; a key `tuneloop keys create` made meanwhile (another
    process) is still honoured on its first request: it was taken as anonymous (a /metrics that needs a key
    answered 401 to it, CI, 2026-12-07), and a project key then saw the anonymous view."""
    import asyncio

    from gateway.auth import ANONYMOUS, Authenticator
    from gateway.errors import AuthenticationFailed

    engine = db.create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    db.upgrade(engine)
    keys = KeyStore(engine)

    async def scenario() -> None:
        auth = Authenticator("auto", keys)
        assert await auth.principal(b"Bearer sk-anything") is ANONYMOUS  # no key yet: anonymous, and remembered
        _, secret = keys.create("ops")  # as the CLI does, behind this process's back
        who = await auth.principal(f"Bearer {secret}".encode())
        assert who is not ANONYMOUS and who.project == "ops" and who.key_id is not None
        with pytest.raises(AuthenticationFailed, match="Incorrect API key"):  # from now on every request needs one
            await auth.principal(b"Bearer sk-anything")

    asyncio.run(scenario())


def test_a_stale_any_key_answer_is_read_once_however_many_requests_wait(tmp_path):
    """Auth ``auto`` re-reads "does any key exist?" once a second: a burst of requests that finds it stale
    shares one database read (one thread hop, one query), and while the database is away the answer known
    before is kept and asked for again a second later, not by every request."""
    import asyncio
    import threading

    from gateway.auth import ANONYMOUS, Authenticator

    engine = db.create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    db.upgrade(engine)

    class Counted(KeyStore):  # the real store, counting its "any key?" reads and holding them at a gate
        reads, gate, down = 0, threading.Event(), False

        def any(self) -> bool:
            Counted.reads += 1
            assert Counted.gate.wait(10)
            if Counted.down:
                raise ConnectionError("database away")
            return super().any()

    async def scenario() -> None:
        auth = Authenticator("auto", Counted(engine))
        burst = [asyncio.ensure_future(auth.principal(b"Bearer sk-x")) for _ in range(50)]
        await asyncio.sleep(0.2)  # every request is waiting on the same read
        Counted.gate.set()
        assert all(p is ANONYMOUS for p in await asyncio.gather(*burst))
        assert Counted.reads == 1
        auth._any_key_until = 0.0  # a second later: stale again, and the database is away
        Counted.down = True
        burst = [auth.principal(b"Bearer sk-x") for _ in range(50)]
        assert all(p is ANONYMOUS for p in await asyncio.gather(*burst))  # what was known, kept
        assert Counted.reads == 2
        assert await auth.principal(b"Bearer sk-x") is ANONYMOUS and Counted.reads == 2  # not again at once

    asyncio.run(scenario())
