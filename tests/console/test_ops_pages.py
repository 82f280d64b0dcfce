"""The review queue, costs and admin pages (/ui/review, /ui/costs, /ui/admin) against a real `tuneloop serve` that
asks for keys: their logic through HTTP with a session cookie and its CSRF token, and one browser test each (no
JavaScript error, nothing asked of another origin): approve with the keyboard, the totals of the log, a key created
(shown once), used and revoked. One gateway and one browser serve the module.

TUNELOOP_CONSOLE_SCREENSHOTS=docs/console saves the screenshots that the README shows."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.console import browser as chrome
from tests.console.test_console import assert_clean, by, sign_in, ui, wait_for
from tests.fixtures.gateway import GatewayProcess, fake_config


@pytest.fixture(scope="module")
def gw(fake_upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("console-ops"),
                        env={"TUNELOOP_AUTH": "required"})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keys(gw: GatewayProcess) -> dict[str, str]:
    return {"a": gw.make_key("--project", "alpha"), "b": gw.make_key("--project", "beta"),
            "admin": gw.make_key("--project", "ops", "--admin")}


@pytest.fixture(scope="module")
def traffic(gw: GatewayProcess, keys: dict[str, str]) -> dict[str, list[str]]:
    a, b = gw.client(api_key=keys["a"]), gw.client(api_key=keys["b"])
    alpha = [a.chat.completions.create(model=model, messages=[{"role": "user", "content": f"question {i}"}]).id
             for i, model in enumerate(["lora-bot", "ft-bot", "lora-bot", "ft-bot", "lora-bot"])]
    beta = [b.chat.completions.create(model="ft-bot", messages=[{"role": "user", "content": "beta question"}]).id]
    return {"alpha": alpha, "beta": beta}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = chrome.start()
    yield browser
    browser.quit()


def session(gw: GatewayProcess, key: str) -> httpx.Client:
    """An HTTP client signed in to the console with ``key`` (its cookie jar holds the session)."""
    client = httpx.Client(base_url=gw.root)
    form = client.get("/ui/signin").text
    client.post("/ui/signin", data={"api_key": key, "csrf": csrf(form)})
    assert "tuneloop_console" in client.cookies
    return client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def rate(gw: GatewayProcess, key: str, completion_id: str, rating: float) -> None:
    answer = httpx.post(f"{gw.base_url}/feedback", json={"completion_id": completion_id, "rating": rating},
                        headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text


def feedback(gw: GatewayProcess, key: str, completion_id: str) -> dict[str, Any]:
    return httpx.get(f"{gw.base_url}/chat/completions/{completion_id}/feedback",
                     headers={"authorization": f"Bearer {key}"}).json()


def shown_item(html: str) -> str | None:
    found = re.search(r'data-testid="review-item" data-id="([^"]+)"', html)
    return found.group(1) if found else None


def test_the_review_queue_over_http(gw: GatewayProcess, keys: dict[str, str], traffic: dict[str, list[str]]) -> None:
    first, second = traffic["alpha"][0], traffic["alpha"][1]
    rate(gw, keys["a"], first, -1)
    rate(gw, keys["a"], second, -1)
    rate(gw, keys["b"], traffic["beta"][0], -1)
    web = session(gw, keys["a"])
    page = web.get("/ui/review?reason=low").text
    shown = shown_item(page)  # the newest (the log keeps whole seconds: a tie goes by id)
    other = first if shown == second else second
    assert shown in (first, second) and 'data-testid="count-low">2<' in page  # beta's reply is not counted
    assert shown_item(web.get(f"/ui/review?reason=low&after={shown}").text) == other  # skipped
    assert web.post(f"/ui/review/{shown}", data={"action": "reject"}).status_code == 403  # no CSRF token
    token = csrf(page)
    done = web.post(f"/ui/review/{shown}", data={"action": "reject", "reason": "low", "csrf": token})
    assert done.status_code == 303 and f"done={shown}" in done.headers["location"]
    assert feedback(gw, keys["a"], shown)["data"][0]["metadata"] == {"review": "reject"}
    assert shown_item(web.get("/ui/review?reason=low").text) == other  # the reviewed one left the queue
    edit = web.post(f"/ui/review/{other}", data={"action": "edit", "correction": "The right reply.", "csrf": token})
    assert edit.status_code == 303
    corrected = feedback(gw, keys["a"], other)["summary"]["correction"]
    assert corrected == {"role": "assistant", "content": "The right reply."}
    assert 'data-testid="queue-empty"' in web.get("/ui/review?reason=low").text
    beta = web.post(f"/ui/review/{traffic['beta'][0]}", data={"action": "approve", "csrf": token})
    assert beta.status_code == 404  # another project's reply
    assert web.post(f"/ui/review/{first}", data={"action": "edit", "correction": " ", "csrf": token}).status_code == 400
    calls = '[{"name": "lookup_order", "arguments": {"order": 7}}]'  # a correction that is a tool call
    edit = web.post(f"/ui/review/{first}", data={"action": "edit", "correction": "", "tool_calls": calls,
                                                 "csrf": token})
    assert edit.status_code == 303, edit.text
    corrected = feedback(gw, keys["a"], first)["summary"]["correction"]
    assert corrected["content"] is None and corrected["tool_calls"][0]["function"] == {
        "name": "lookup_order", "arguments": '{"order": 7}'}
    bad = web.post(f"/ui/review/{first}", data={"action": "edit", "tool_calls": "[{", "csrf": token})
    assert bad.status_code == 400 and "Tool calls: not JSON" in bad.text
    assert web.get("/ui/review?reason=nope").status_code == 400


def test_approving_with_the_keyboard(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                     traffic: dict[str, list[str]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    target = traffic["alpha"][2]
    rate(gw, keys["a"], target, -1)
    sign_in(driver, gw, keys["a"])
    assert not driver.find_elements(*by("nav-admin"))  # a project key has no admin page
    driver.find_element(*by("nav-review")).click()
    driver.get(ui(gw, "review?reason=low"))
    item = wait_for(driver, "review-item")
    assert item.get_attribute("data-id") == target and driver.find_elements(*by("reply"))
    chrome.screenshot(driver, "review")
    ActionChains(driver).send_keys("a").perform()
    assert wait_for(driver, "notice").text == f"Approved {target}."
    summary = feedback(gw, keys["a"], target)["summary"]
    assert summary["rating"] == 1 and summary["count"] == 2
    assert driver.find_elements(*by("queue-empty"))  # it left the queue
    assert_clean(driver, gw)


def _log_sums(gw: GatewayProcess, project: str | None) -> tuple[float, int]:
    engine = sa.create_engine(f"sqlite:///{gw.home / 'tuneloop.db'}")
    cond = [sa.column("project") == project] if project else []
    with engine.connect() as conn:
        cost, count = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.column("cost_usd")), 0.0),
                                             sa.func.count()).select_from(sa.table("interactions")).where(*cond)).one()
    engine.dispose()
    return cost, count


def test_costs_over_http(gw: GatewayProcess, keys: dict[str, str], traffic: dict[str, list[str]]) -> None:
    page = session(gw, keys["a"]).get("/ui/costs").text
    cost, count = _log_sums(gw, "alpha")
    assert f'data-testid="total-requests" data-value="{count}"' in page and count == len(traffic["alpha"])
    assert cost > 0 and f'data-testid="total-cost" data-value="{cost}"' in page
    assert 'data-testid="by-project"' not in page  # a project key sees its own project only
    admin = session(gw, keys["admin"])
    assert 'data-project="beta"' in admin.get("/ui/costs?days=7").text
    assert admin.get("/ui/costs?from=2027-02-01&to=2027-01-01").status_code == 400


def test_the_costs_page_shows_the_logs_totals(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                              traffic: dict[str, list[str]]) -> None:
    sign_in(driver, gw, keys["admin"])
    driver.find_element(*by("nav-costs")).click()
    total = wait_for(driver, "total-cost")
    cost, count = _log_sums(gw, None)
    assert float(total.get_attribute("data-value")) == pytest.approx(cost)
    assert int(driver.find_element(*by("total-requests")).get_attribute("data-value")) == count
    assert {r.get_attribute("data-model") for r in driver.find_elements(*by("model-row"))} == {"lora-bot", "ft-bot"}
    assert driver.find_elements("css selector", '[data-testid="chart-cost"] svg rect.bar')
    chrome.screenshot(driver, "costs")
    assert_clean(driver, gw)


def test_the_admin_pages_over_http(gw: GatewayProcess, keys: dict[str, str]) -> None:
    project = session(gw, keys["a"])
    assert project.get("/ui/admin").status_code == 403
    token = csrf(project.get("/ui/").text)
    assert project.post("/ui/admin/keys", data={"project": "x", "csrf": token}).status_code == 403
    admin = session(gw, keys["admin"])
    token = csrf(admin.get("/ui/admin").text)
    bad = admin.post("/ui/admin/keys", data={"project": "x", "rpm": "-1", "csrf": token})
    assert bad.status_code == 400 and 'data-testid="new-key"' not in bad.text
    assert admin.post("/ui/admin/keys", data={"project": "x", "rpm": "5"}).status_code == 403  # no CSRF token
    made = admin.post("/ui/admin/keys", data={"project": "delta", "max_tokens": "64", "tpm": "1000",
                                              "expires_in_days": "30", "csrf": token})
    secret = re.search(r'value="(tl-[^"]+)" data-testid="new-key"', made.text)
    assert made.status_code == 200 and secret is not None
    listed = httpx.get(f"{gw.base_url}/admin/keys", headers={"authorization": f"Bearer {keys['admin']}"}).json()
    key = [k for k in listed["data"] if k["project"] == "delta"][0]
    assert key["limits"] == {"max_tokens": 64, "tpm": 1000.0} and key["expires"] > time.time() + 29 * 86400
    rotated = admin.post(f"/ui/admin/keys/{key['id']}/rotate", data={"grace_hours": "1", "csrf": token})
    assert rotated.status_code == 200 and 'data-testid="new-key"' in rotated.text
    assert admin.post("/ui/admin/keys/key_nope/revoke", data={"csrf": token}).status_code == 404


def test_an_admin_creates_a_key_shown_once_and_revokes_it(driver: Any, gw: GatewayProcess,
                                                          keys: dict[str, str]) -> None:
    sign_in(driver, gw, keys["admin"])
    driver.find_element(*by("nav-admin")).click()
    wait_for(driver, "create-key")
    driver.find_element(*by("key-project")).send_keys("gamma")
    driver.find_element(*by("key-name")).send_keys("support bot")
    driver.find_element(*by("key-rpm")).send_keys("60")
    driver.find_element(*by("create-key-submit")).click()
    secret = wait_for(driver, "new-key").get_attribute("value")
    assert secret.startswith("tl-") and secret not in driver.current_url
    chrome.screenshot(driver, "admin")
    models = httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {secret}"})
    assert models.status_code == 200
    driver.get(ui(gw, "admin"))
    assert secret not in driver.page_source  # never again
    row = [r for r in driver.find_elements(*by("key-row")) if "gamma" in r.text][0]
    assert "rpm 60" in row.text and row.get_attribute("data-state") == "live"
    row.find_element(*by("revoke")).click()
    wait_for(driver, "confirm-revoke")
    driver.find_element(*by("confirm")).click()
    assert wait_for(driver, "notice").text.startswith("Revoked key_")
    models = httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {secret}"})
    assert models.status_code == 401
    assert_clean(driver, gw)
