"""The console (/ui/) in a real browser (headless chromium) against a real `tuneloop serve` that asks for keys,
with two projects' traffic made through the openai SDK: sign-in, tenancy (also by typing another project's URL),
a correction saved in the page and read back over the API, CSRF, sign-out, an admin's project switch, and the
console of a gateway with auth off. Every page must load with no browser console error and ask nothing of any
origin but the gateway's. One browser serves the whole module.

TUNELOOP_CONSOLE_SCREENSHOTS=docs/console saves the screenshots that the README shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.console import browser as chrome
from tests.console.session import Console
from tests.fixtures.gateway import GatewayProcess, fake_config
from tests.security.test_auth import _fresh_minute

MARK_A = "order #1042"
MARK_B = "beta-confidential"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def gw(fake_upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("console"),
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
    alpha = [
        a.chat.completions.create(model="lora-bot", messages=[
            {"role": "system", "content": "You are Acme's support assistant. Be brief and kind."},
            {"role": "user", "content": f"My {MARK_A} has not arrived yet. Can you check where it is?"}]).id,
        a.chat.completions.create(model="tools-bot", tools=[WEATHER],  # type: ignore[list-item]
                                  messages=[{"role": "user", "content": "What's the weather in Lyon?"}]).id,
        a.chat.completions.create(model="ft-bot",
                                  messages=[{"role": "user", "content": "How do I reset my password?"}]).id,
    ]
    with pytest.raises(openai.BadRequestError):  # a failed request shows in the traffic too
        a.chat.completions.create(model="err400", messages=[{"role": "user", "content": "this one fails"}])
    beta = [b.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": f"{MARK_B} {i}"}]).id
            for i in range(2)]
    return {"alpha": alpha, "beta": beta}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = chrome.start()
    yield browser
    browser.quit()


def ui(gw: GatewayProcess, path: str = "") -> str:
    return f"{gw.root}/ui/{path}"


def by(testid: str) -> tuple[str, str]:
    return ("css selector", f'[data-testid="{testid}"]')


def wait_for(driver: Any, testid: str) -> Any:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located(by(testid)))


def wait_until(driver: Any, check: Any, timeout: float = 15) -> Any:
    """``check(driver)`` until it is true. A page that re-renders as it follows the server may replace the
    element between finding and reading it: that read is tried again (Selenium's stale element, or Chromium's
    "node ... does not belong to the document"), as an element not there yet is."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def safely(d: Any) -> Any:
        try:
            return check(d)
        except WebDriverException as exc:
            if isinstance(exc, (NoSuchElementException, StaleElementReferenceException)) \
                    or "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout).until(safely)


def submit_and_wait(driver: Any, testid: str) -> None:
    """Click ``testid`` and wait until the page it leads to has replaced this one."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element("tag name", "html")
    driver.find_element(*by(testid)).click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(page))


def shown(driver: Any) -> list[str]:
    return [row.get_attribute("data-id") for row in driver.find_elements(*by("traffic-row"))]


def sign_in(driver: Any, gw: GatewayProcess, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(ui(gw))
    assert driver.current_url == ui(gw, "signin")  # not signed in: sent to the sign-in form
    driver.find_element(*by("api-key")).send_keys(key)
    driver.find_element(*by("sign-in")).click()
    wait_for(driver, "nav-traffic")


def assert_clean(driver: Any, gw: GatewayProcess, not_found: str | None = None) -> None:
    """No console error on any page since the last check (but the 404 of the page ``not_found``, when a test
    asked for one), and no request to any origin but the gateway's."""
    errors = chrome.js_errors(driver)
    assert [e for e in errors if not (not_found and e.startswith(f"{not_found} - ") and "404" in e)] == []
    urls = chrome.requested_urls(driver)
    assert urls and all(u.startswith(gw.root + "/") or u.startswith("data:") for u in urls), urls
    assert all(u.startswith(gw.root + "/") for u in chrome.resources(driver))


def test_a_project_key_sees_its_own_traffic_and_no_other(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                        traffic: dict[str, list[str]]) -> None:
    driver.delete_all_cookies()
    driver.get(ui(gw))
    wait_for(driver, "api-key")
    chrome.screenshot(driver, "signin")
    sign_in(driver, gw, keys["a"])
    rows = shown(driver)
    assert set(traffic["alpha"]) <= set(rows) and not set(traffic["beta"]) & set(rows)
    assert len(rows) == 4  # the failed request is listed too
    times = [t.get_attribute("datetime") for t in driver.find_elements("css selector", "tr time")]
    assert times == sorted(times, reverse=True)  # newest first (the log keeps whole seconds)
    assert MARK_B not in driver.page_source and keys["a"] not in driver.page_source
    chrome.screenshot(driver, "traffic")
    cookie = driver.get_cookie("tuneloop_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert keys["a"] not in cookie["value"] and all(keys["a"] not in c["value"] for c in driver.get_cookies())
    driver.get(ui(gw, "?status=error"))
    assert len(shown(driver)) == 1 and not set(shown(driver)) & set(traffic["alpha"])
    driver.get(ui(gw, f"?q={MARK_A.replace('#', '%23')}"))
    assert shown(driver) == [traffic["alpha"][0]]
    assert_clean(driver, gw)


def test_another_projects_interaction_is_not_found_by_its_url(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                             traffic: dict[str, list[str]]) -> None:
    sign_in(driver, gw, keys["a"])
    driver.get(ui(gw, f"completions/{traffic['beta'][0]}"))
    wait_for(driver, "not-found")
    assert MARK_B not in driver.page_source
    assert_clean(driver, gw, not_found=ui(gw, f"completions/{traffic['beta'][0]}"))


def test_a_correction_saved_in_the_page_is_the_apis_feedback(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                            traffic: dict[str, list[str]]) -> None:
    sign_in(driver, gw, keys["a"])
    driver.get(ui(gw, f"completions/{traffic['alpha'][1]}"))
    assert driver.find_element(*by("tool-call")).text.startswith("get_weather")  # the reply's tool call
    driver.get(ui(gw, f"completions/{traffic['alpha'][0]}"))
    roles = [b.get_attribute("data-role") for b in driver.find_elements(*by("bubble"))]
    assert roles == ["system", "user", "assistant"]
    route = driver.find_element(*by("route")).text
    assert "lora-bot" in route and "support-v3" in route
    driver.find_element(*by("rate-down")).click()
    wait_for(driver, "notice")
    ideal = "Sorry about the wait! Order #1042 left our warehouse yesterday; it should reach you by Friday."
    box = driver.find_element(*by("correction"))
    box.clear()
    box.send_keys(ideal)
    driver.find_element(*by("tags")).send_keys("shipping, tone")
    submit_and_wait(driver, "save-feedback")  # the rating's page had a notice too: wait for the next page
    assert wait_for(driver, "notice").text == "Saved."
    chrome.screenshot(driver, "completion")
    answer = httpx.get(f"{gw.base_url}/chat/completions/{traffic['alpha'][0]}/feedback",
                       headers={"authorization": f"Bearer {keys['a']}"})
    summary = answer.json()["summary"]
    assert summary["correction"] == {"role": "assistant", "content": ideal}
    assert summary["rating"] == -1 and summary["tags"] == ["shipping", "tone"] and summary["count"] == 2
    driver.get(ui(gw, "?corrected=yes"))
    assert shown(driver) == [traffic["alpha"][0]]
    assert_clean(driver, gw)


def test_a_post_without_the_csrf_token_is_refused(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                  traffic: dict[str, list[str]]) -> None:
    sign_in(driver, gw, keys["a"])
    target = traffic["alpha"][2]
    driver.get(ui(gw, f"completions/{target}"))
    found = re.search(r'name="csrf" value="([^"]+)"', driver.page_source)
    token = found.group(1) if found else ""
    session = {"cookie": f"tuneloop_console={driver.get_cookie('tuneloop_console')['value']}"}
    url = ui(gw, f"completions/{target}/feedback")
    assert httpx.post(url, data={"correction": "forged"}, headers=session).status_code == 403
    assert httpx.post(url, data={"correction": "forged", "csrf": "wrong"}, headers=session).status_code == 403
    assert httpx.post(url, data={"correction": "forged", "csrf": token}).status_code == 403  # no session
    assert httpx.post(url, data={"correction": "real", "csrf": token}, headers=session).status_code == 303
    feedback = httpx.get(f"{gw.base_url}/chat/completions/{target}/feedback",
                         headers={"authorization": f"Bearer {keys['a']}"}).json()
    assert [f["correction"]["content"] for f in feedback["data"]] == ["real"]
    assert_clean(driver, gw)


def test_signing_out_ends_the_session(driver: Any, gw: GatewayProcess, keys: dict[str, str]) -> None:
    sign_in(driver, gw, keys["a"])
    old = driver.get_cookie("tuneloop_console")["value"]
    driver.find_element(*by("sign-out")).click()
    wait_for(driver, "api-key")
    assert driver.current_url == ui(gw, "signin") and driver.get_cookie("tuneloop_console") is None
    assert httpx.get(ui(gw), headers={"cookie": f"tuneloop_console={old}"}).status_code == 303  # ended on the server
    driver.get(ui(gw))
    assert driver.current_url == ui(gw, "signin")
    assert keys["a"] not in gw.log_path.read_text()
    assert_clean(driver, gw)


def test_an_admin_key_sees_every_project_and_can_switch(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                       traffic: dict[str, list[str]]) -> None:
    from selenium.webdriver.support.ui import Select

    sign_in(driver, gw, keys["admin"])
    assert set(traffic["alpha"]) | set(traffic["beta"]) <= set(shown(driver))
    Select(driver.find_element(*by("project-select"))).select_by_value("beta")
    wait_for(driver, "traffic-row")
    assert set(shown(driver)) == set(traffic["beta"])
    driver.get(ui(gw, f"completions/{traffic['alpha'][0]}"))  # an admin reads any project's interaction
    wait_for(driver, "route")
    assert_clean(driver, gw)


def test_with_auth_off_the_console_opens_as_the_local_admin(driver: Any, fake_upstream: Any,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    local = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("console-open"),
                           env={"TUNELOOP_AUTH": "off"})
    try:
        made = local.client().chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": "hi"}])
        driver.get(ui(local))
        wait_for(driver, "traffic-row")
        assert driver.current_url == ui(local) and shown(driver) == [made.id]
        assert driver.find_element(*by("admin")) and driver.find_element(*by("keyless"))
        assert not driver.find_elements(*by("sign-out"))
        driver.find_element(*by("traffic-row")).find_element("css selector", "a").click()
        box = wait_for(driver, "correction")
        box.clear()
        box.send_keys("Hello! How can I help?")
        driver.find_element(*by("save-feedback")).click()
        assert wait_for(driver, "notice").text == "Saved."
        assert_clean(driver, local)
    finally:
        local.stop()


def test_console_writes_count_against_the_keys_rpm(gw: GatewayProcess, traffic: dict[str, list[str]]) -> None:
    """A form is a write, as ``POST /v1/feedback`` is: the same budget of requests per minute (429 past it);
    signing out always works."""
    key = gw.make_key("--project", "alpha", "--rpm", "3")
    _fresh_minute()  # the rpm window is the clock's minute: not rolling over mid-test
    api = httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {key}"})
    target = traffic["alpha"][2]
    assert api.post("/feedback", json={"completion_id": target, "rating": 1}).status_code == 200  # 1 of 3
    console = Console(gw, key)
    try:
        saved = [console.post(f"/completions/{target}/feedback", {"comment": f"note {i}"}).status_code
                 for i in range(3)]
        assert saved == [303, 303, 429]  # 2 and 3 of 3, then refused, as a page
        assert api.post("/feedback", json={"completion_id": target, "rating": 1}).status_code == 429
        assert console.post("/signout").status_code == 303
    finally:
        console.close()
        api.close()


def test_a_tool_call_correction_from_the_page(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                              traffic: dict[str, list[str]]) -> None:
    """A reply that called a tool gets a tool-calls box: edited, it saves the API's correction message."""
    sign_in(driver, gw, keys["a"])
    target = traffic["alpha"][1]
    driver.get(ui(gw, f"completions/{target}"))
    box = driver.find_element(*by("correction-tool-calls"))
    assert [c["name"] for c in json.loads(box.get_attribute("value"))] == ["get_weather"]  # the reply's call
    box.clear()
    box.send_keys('[{"name": "get_weather", "arguments": {"city": "Lyon", "unit": "celsius"}}]')
    submit_and_wait(driver, "save-feedback")
    assert wait_for(driver, "notice").text == "Saved."
    api = {"authorization": f"Bearer {keys['a']}"}
    summary = httpx.get(f"{gw.base_url}/chat/completions/{target}/feedback", headers=api).json()["summary"]
    assert summary["correction"]["content"] is None
    [call] = summary["correction"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lyon", "unit": "celsius"}
    shown_now = json.loads(driver.find_element(*by("correction-tool-calls")).get_attribute("value"))
    assert shown_now == [{"name": "get_weather", "arguments": {"city": "Lyon", "unit": "celsius"}}]

    console = Console(gw, keys["a"])  # what does not parse is a 400 on the page, and nothing is saved
    try:
        bad = console.post(f"/completions/{target}/feedback", {"tool_calls": '[{"name": "get_weather", '})
        assert bad.status_code == 400 and "Tool calls: not JSON" in bad.text
        unnamed = console.post(f"/completions/{target}/feedback", {"tool_calls": '[{"arguments": {}}]'})
        assert unnamed.status_code == 400 and "call 1 has no name" in unnamed.text
    finally:
        console.close()
    after = httpx.get(f"{gw.base_url}/chat/completions/{target}/feedback", headers=api).json()["summary"]
    assert after == summary
    driver.get(ui(gw, f"completions/{traffic['alpha'][2]}"))  # no tools offered, none called: no box
    assert driver.find_elements(*by("correction-tool-calls")) == []
    assert_clean(driver, gw)
