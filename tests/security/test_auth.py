"""API keys per project, tenancy of the log, admin routes, limits: against real gateways."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest

from tests.engine.test_supervision import wait_for
from tests.fixtures.gateway import FAKE_KEY, GatewayProcess, fake_config, received

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def secured(fake_upstream, tmp_path_factory):
    config = fake_config(fake_upstream)
    config["redis_url"] = "redis://127.0.0.1:6379/0"
    gw = GatewayProcess(config, tmp_path_factory.mktemp("secured"), env={"TUNELOOP_AUTH": "required"})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keys(secured):
    return {"a": secured.make_key("--project", "alpha"), "b": secured.make_key("--project", "beta"),
            "admin": secured.make_key("--project", "ops", "--admin")}


def test_no_key_and_bad_key_are_401(secured):
    none = httpx.post(f"{secured.base_url}/chat/completions", json={"model": "lora-bot", "messages": MSG})
    assert none.status_code == 401 and none.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        secured.client(api_key="tl-not-a-key").chat.completions.create(model="lora-bot", messages=MSG)
    with pytest.raises(openai.AuthenticationError):
        secured.client(api_key="tl-not-a-key").models.list()
    assert httpx.get(f"{secured.root}/health/live").status_code == 200  # probes stay open


def test_the_upstream_never_sees_a_callers_key(secured, keys, fake_upstream, upstream_requests):
    secured.client(api_key=keys["a"]).chat.completions.create(model="ft-bot", messages=MSG)
    (req,) = received(fake_upstream)
    assert req["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    assert keys["a"] not in secured.log_path.read_text()


def test_revoked_key_is_401(secured):
    key = secured.make_key("--project", "gamma")
    client = secured.client(api_key=key)
    assert client.chat.completions.create(model="lora-bot", messages=MSG).choices
    key_id = httpx.get(f"{secured.base_url}/admin/keys", params={"project": "gamma"},
                       headers={"authorization": f"Bearer {secured.make_key('--project', 'x', '--admin')}"}
                       ).json()["data"][0]["id"]
    secured.cli("keys", "revoke", key_id)
    deadline = time.time() + 8  # verified keys are cached for a few seconds
    while time.time() < deadline:
        try:
            client.chat.completions.create(model="lora-bot", messages=MSG)
            time.sleep(0.5)
        except openai.AuthenticationError:
            return
    pytest.fail("the revoked key still works")


def test_app_key_on_admin_route_is_403(secured, keys):
    resp = httpx.get(f"{secured.base_url}/admin/routes", headers={"authorization": f"Bearer {keys['a']}"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "permission_denied"
    ok = httpx.get(f"{secured.base_url}/admin/routes", headers={"authorization": f"Bearer {keys['admin']}"})
    assert ok.status_code == 200 and "lora-bot" in ok.json()["models"]


def test_projects_see_only_their_own_records(secured, keys):
    a, b = secured.client(api_key=keys["a"]), secured.client(api_key=keys["b"])
    mine = a.chat.completions.create(model="lora-bot", messages=MSG, store=True, metadata={"t": "iso"})
    theirs = b.chat.completions.create(model="lora-bot", messages=MSG, store=True, metadata={"t": "iso"})
    assert a.chat.completions.retrieve(mine.id).id == mine.id
    for call in (lambda: b.chat.completions.retrieve(mine.id),
                 lambda: b.chat.completions.messages.list(mine.id),
                 lambda: b.chat.completions.update(mine.id, metadata={"x": "y"}),
                 lambda: b.chat.completions.delete(mine.id)):
        with pytest.raises(openai.NotFoundError):  # exactly as if it did not exist
            call()
    assert [c.id for c in b.chat.completions.list(metadata={"t": "iso"})] == [theirs.id]
    fb = httpx.post(f"{secured.base_url}/feedback", json={"completion_id": mine.id, "rating": 1},
                    headers={"authorization": f"Bearer {keys['b']}"})
    assert fb.status_code == 404
    admin = secured.client(api_key=keys["admin"])
    assert {c.id for c in admin.chat.completions.list(metadata={"t": "iso"})} == {mine.id, theirs.id}


def _fresh_minute() -> None:
    """Start limit tests early in a minute so the window does not roll over mid-test."""
    if time.time() % 60 > 54:  # the test itself takes a second or two
        time.sleep(61 - time.time() % 60)


def test_requests_per_minute_hold_across_two_gateways_sharing_redis(secured, keys, fake_upstream, tmp_path):
    key = secured.make_key("--project", f"rl-{uuid.uuid4().hex[:6]}", "--rpm", "4")
    config = fake_config(fake_upstream)
    config["redis_url"] = "redis://127.0.0.1:6379/0"
    config["database_url"] = f"sqlite:///{secured.home}/tuneloop.db"  # the same keys
    other = GatewayProcess(config, tmp_path, env={"TUNELOOP_AUTH": "required"})
    _fresh_minute()
    try:
        one, two = secured.client(api_key=key), other.client(api_key=key)
        for client in (one, two, one, two):
            raw = client.chat.completions.with_raw_response.create(model="lora-bot", messages=MSG)
        assert raw.headers["x-ratelimit-limit-requests"] == "4"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        for client in (one, two):
            with pytest.raises(openai.RateLimitError) as err:
                client.chat.completions.create(model="lora-bot", messages=MSG)
            headers = err.value.response.headers
            assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining-requests"] == "0"
    finally:
        other.stop()


def test_key_max_tokens_caps_requests(secured, fake_upstream, upstream_requests):
    key = secured.make_key("--project", "capped", "--max-tokens", "5")
    client = secured.client(api_key=key)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="lora-bot", messages=MSG, max_tokens=50)
    assert err.value.param == "max_tokens"
    client.chat.completions.create(model="lora-bot", messages=MSG)
    assert received(fake_upstream)[-1]["body"]["max_tokens"] == 5
    # the cap is per request, all choices together (issue 19: n multiplied it)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="lora-bot", messages=MSG, max_tokens=3, n=2)
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="lora-bot", messages=MSG, n=6)
    assert err.value.param == "n"
    client.chat.completions.create(model="lora-bot", messages=MSG, n=2)
    assert received(fake_upstream)[-1]["body"]["max_tokens"] == 2


def test_daily_budget(secured):
    # one request reserves at most ~$0.0000087 (prompt estimate + 5 tokens) and spends ~$0.0000027
    key = secured.make_key("--project", f"budget-{uuid.uuid4().hex[:6]}", "--usd-per-day", "0.00001")
    client = secured.client(api_key=key)
    client.chat.completions.create(model="ft-bot", messages=MSG, max_tokens=5)  # priced: spends the budget
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            client.chat.completions.create(model="ft-bot", messages=MSG, max_tokens=5)
            time.sleep(0.2)
        except openai.RateLimitError as err:
            assert err.code == "insufficient_quota"
            return
    pytest.fail("the budget was not enforced")


def test_files_and_fine_tuning_jobs_are_project_scoped(secured, keys, tmp_path):
    a, b = secured.client(api_key=keys["a"]), secured.client(api_key=keys["b"])
    data = tmp_path / "sft.jsonl"
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi!"}]}
    data.write_text(json.dumps(line) + "\n")
    mine = a.files.create(file=data.open("rb"), purpose="fine-tune")
    assert a.files.retrieve(mine.id).id == mine.id
    assert mine.id not in [f.id for f in b.files.list()]
    for call in (lambda: b.files.retrieve(mine.id), lambda: b.files.content(mine.id),
                 lambda: b.files.delete(mine.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as err:  # nor train on it
        b.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=mine.id)
    assert err.value.code == "invalid_file"
    assert a.files.retrieve(mine.id).id == mine.id  # still there
    with pytest.raises(openai.NotFoundError):
        b.fine_tuning.jobs.retrieve("ftjob-not-yours")


def _key_id(gw: GatewayProcess, secret: str) -> str:
    (line,) = [ln for ln in gw.cli("keys", "list").splitlines() if f"{secret[:8]}…" in ln]
    return line.split()[0]


def _status(gw: GatewayProcess, secret: str) -> int:
    return httpx.get(f"{gw.base_url}/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code


def test_keys_expire_and_rotate_with_a_grace_period(secured):
    """Issue 19: `keys create --expires-in`, `keys rotate --grace` (the old key lives on, then not)."""
    short = secured.make_key("--project", "rotating", "--expires-in", "6s")
    assert _status(secured, short) == 200
    wait_for(lambda: _status(secured, short) == 401)
    old = secured.make_key("--project", "rotating", "--rpm", "1000")
    old_id = _key_id(secured, old)
    new = secured.cli("keys", "rotate", old_id, "--grace", "3s").strip().splitlines()[-1]
    assert new != old and _status(secured, new) == 200 and _status(secured, old) == 200  # both, for the grace
    wait_for(lambda: _status(secured, old) == 401)
    assert _status(secured, new) == 200
    (rotated,) = json.loads(secured.cli("audit", "--json", "--action", "key.rotate"))
    assert rotated["target"] == old_id and rotated["detail"]["new"] == _key_id(secured, new)


def test_cost_metric_is_labelled_with_the_callers_project(secured, keys):
    """Issue 19 (low): the label was always `default`."""
    from tests.gateway.test_costs import _metric

    before = _metric(secured, "tuneloop_cost_usd_total", model="ft-bot", project="alpha")
    secured.client(api_key=keys["a"]).chat.completions.create(model="ft-bot", messages=MSG, max_tokens=5)
    assert _metric(secured, "tuneloop_cost_usd_total", model="ft-bot", project="alpha") > before


def test_metrics_can_require_a_key(fake_upstream, tmp_path):
    """Issue 19 (low): `metrics_auth: true` in the config; any valid key scrapes (Prometheus' credentials)."""
    gw = GatewayProcess({**fake_config(fake_upstream), "metrics_auth": True}, tmp_path)
    try:
        assert httpx.get(f"{gw.root}/metrics", timeout=10).status_code == 401  # anonymous: no
        key = gw.make_key("--project", "ops")
        bad = httpx.get(f"{gw.root}/metrics", headers={"Authorization": "Bearer tl-nope"}, timeout=10)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.get(f"{gw.root}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert ok.status_code == 200 and "tuneloop_requests_total" in ok.text
    finally:
        gw.stop()
