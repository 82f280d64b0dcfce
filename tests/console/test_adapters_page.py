"""The console's adapters page (/ui/adapters) against a real `tuneloop serve` that asks for keys: each alias's
routes and weights, adapter versions with their lineage (adapter -> job -> dataset -> interactions), a canary's
arms, and promotion and rollback with a confirmation page, through ``gateway.promotion`` (the code of
``tuneloop promote`` / ``rollback``): the alias's routes change in the database and in what /v1 calls reach.
Only the alias's owner (or an admin) may change it. One browser test: promote and roll back by clicking.

The aliases route to the fake OpenAI target, which needs no hot-load (promotion skips it for non-vLLM
targets); the adapter and its job are written through the store, as a finished job leaves them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.store import db
from gateway.store.audit import AuditStore
from gateway.store.datasets import DatasetRow, DatasetStore, new_dataset_id
from gateway.store.jobs import JobStore
from gateway.store.registry import AdapterRegistry
from gateway.store.routes import RouteStore
from tests.console import browser as chrome
from tests.console.session import Console
from tests.console.test_console import assert_clean, by, sign_in, ui, wait_for
from tests.fixtures.gateway import GatewayProcess, fake_config, received

BASE = "shop-base-v1"
OWNED = {
    "shop-bot": {"routes": [{"target": "fake-openai", "model": BASE}], "project": "alpha"},
    "beta-bot": {"routes": [{"target": "fake-openai", "model": "beta-base"}], "project": "beta"},
}


@pytest.fixture(scope="module")
def gw(fake_upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fake_config(fake_upstream, **OWNED), tmp_path_factory.mktemp("console-adapters"),
                        env={"TUNELOOP_AUTH": "required", "TUNELOOP_TRAINING_RUNNER": "0"})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keys(gw: GatewayProcess) -> dict[str, str]:
    return {"a": gw.make_key("--project", "alpha"), "b": gw.make_key("--project", "beta"),
            "admin": gw.make_key("--project", "ops", "--admin")}


@pytest.fixture(scope="module")
def engine(gw: GatewayProcess) -> Any:
    engine = db.create_engine(os.environ.get("TUNELOOP_DATABASE_URL") or db.default_database_url(gw.home))
    yield engine
    engine.dispose()


def _adapter(engine: Any, name: str, tmp: Any) -> str:
    """A finished alpha job on a 3-interaction dataset, and the candidate adapter it registered."""
    ds = DatasetRow(id=new_dataset_id(), name=f"{name}-data", kind="sft", path=str(tmp / f"{name}.jsonl"), rows=3,
                    sha256="0" * 64, project="alpha")
    store = DatasetStore(engine)
    store.create(ds)
    store.add_sources(ds.id, [(f"chatcmpl-{name}-{i}", "train") for i in range(3)])
    jobs = JobStore(engine)
    job = jobs.create({"backend": "local", "model": "smollm2-135m-instruct", "project": "alpha", "status": "running",
                       "dataset_id": ds.id, "worker_pid": 1})
    jobs.finish(job["id"], "succeeded", fine_tuned_model=name)
    folder = tmp / name
    folder.mkdir()
    aid = jobs.register_adapter(name, "smollm2-135m-instruct", str(folder), job["id"], {"train_loss": 0.4})
    AdapterRegistry(engine).merge_metrics(aid, {"eval": {"metric": "exact", "examples": 3, "plot": None,
                                                         "candidate": {"score": 0.9}, "live": {"score": 0.5}}})
    return aid


def _routed(gw: GatewayProcess, fake: Any, key: str) -> str:
    """What model the upstream got for one call to shop-bot."""
    gw.client(api_key=key).chat.completions.create(model="shop-bot", messages=[{"role": "user", "content": "hi"}])
    return str(received(fake)[-1]["body"]["model"])


def test_a_canary_from_the_page_with_its_arms_then_rolled_back(gw: GatewayProcess, keys: dict[str, str], engine: Any,
                                                               fake_upstream: Any, tmp_path: Any) -> None:
    aid = _adapter(engine, "shop-ft-canary", tmp_path)
    alpha, beta = Console(gw, keys["a"]), Console(gw, keys["b"])
    try:
        page = alpha.get("/adapters").text
        assert 'data-alias="shop-bot"' in page and 'data-alias="beta-bot"' not in page and aid in page
        assert aid not in beta.get("/adapters").text and beta.get(f"/adapters/{aid}").status_code == 404
        one = alpha.get(f"/adapters/{aid}").text
        assert 'data-testid="lineage-interactions">3 interactions' in one and "candidate" in one
        assert "exact: candidate 0.9 live 0.5" in alpha.get("/adapters").text
        confirm = alpha.get("/promote", params={"adapter": aid, "alias": "shop-bot", "canary": "50"})
        assert confirm.status_code == 200 and 'data-testid="confirm"' in confirm.text
        assert RouteStore(engine).get("shop-bot") is None  # asking is not doing
        assert beta.get("/promote", params={"adapter": aid, "alias": "beta-bot"}).status_code == 404
        assert alpha.post("/promote", {"adapter": aid, "alias": "beta-bot"}).status_code == 403  # not alpha's
        assert alpha.post("/promote", {"adapter": aid, "alias": "shop-bot", "canary": "50"}, csrf=False) \
            .status_code == 403
        done = alpha.post("/promote", {"adapter": aid, "alias": "shop-bot", "canary": "50", "reason": "try it"})
        assert done.status_code == 303, done.text
        entry = RouteStore(engine).get("shop-bot")
        assert entry is not None and [(r["model"], r["weight"]) for r in entry[0]["routes"]] == \
            [(BASE, 50), ("shop-ft-canary", 50)]
        assert AdapterRegistry(engine).get(aid)["status"] == "canary"  # type: ignore[index]
        seen = {_routed(gw, fake_upstream, keys["a"]) for _ in range(24)}
        assert seen == {BASE, "shop-ft-canary"}  # both arms take traffic at once (applied on this replica)
        page = alpha.get("/adapters").text
        assert 'data-testid="canary"' in page and 'data-arm="shop-ft-canary"' in page and f'data-arm="{BASE}"' in page
        assert alpha.post("/rollback", {"alias": "shop-bot"}).status_code == 303
        assert RouteStore(engine).get("shop-bot") is None  # back to the YAML's entry
        assert {_routed(gw, fake_upstream, keys["a"]) for _ in range(6)} == {BASE}
        assert AdapterRegistry(engine).get(aid)["status"] == "retired"  # type: ignore[index]
        audit = AuditStore(engine).list(limit=2)  # newest first, named by the key that did it
        assert [r["action"] for r in audit] == ["adapter.rollback", "adapter.canary"]
        assert audit[0]["actor"] == audit[1]["actor"] and audit[0]["actor"] not in ("admin", "") \
            and not audit[0]["actor"].startswith("cli") and keys["a"] not in audit[0]["actor"]
        assert audit[1]["detail"]["reason"] == "try it"
        nothing = alpha.get("/rollback", params={"alias": "shop-bot"})
        assert nothing.status_code == 409 and "Nothing to roll back" in nothing.text
    finally:
        alpha.close()
        beta.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = chrome.start()
    yield browser
    browser.quit()


def test_promote_and_roll_back_by_clicking(driver: Any, gw: GatewayProcess, keys: dict[str, str], engine: Any,
                                           fake_upstream: Any, tmp_path: Any) -> None:
    aid = _adapter(engine, "shop-ft-full", tmp_path)
    sign_in(driver, gw, keys["a"])
    driver.find_element(*by("nav-adapters")).click()
    wait_for(driver, "alias")
    driver.get(ui(gw, f"adapters/{aid}"))
    wait_for(driver, "lineage")
    chrome.screenshot(driver, "adapter")
    driver.find_element(*by("promote")).click()  # no canary share: all traffic
    wait_for(driver, "confirm")
    chrome.screenshot(driver, "promote-confirm")
    assert RouteStore(engine).get("shop-bot") is None
    driver.find_element(*by("confirm")).click()
    assert "shop-ft-full 100%" in wait_for(driver, "notice").text
    shop = driver.find_element("css selector", '[data-alias="shop-bot"]')
    assert [r.get_attribute("data-model") for r in shop.find_elements(*by("route"))] == ["shop-ft-full"]
    assert _routed(gw, fake_upstream, keys["a"]) == "shop-ft-full"
    chrome.screenshot(driver, "adapters")
    assert AdapterRegistry(engine).get(aid)["status"] == "live"  # type: ignore[index]
    shop.find_element(*by("rollback")).click()
    wait_for(driver, "confirm").click()
    assert "rolled back shop-bot" in wait_for(driver, "notice").text
    assert _routed(gw, fake_upstream, keys["a"]) == BASE
    assert RouteStore(engine).get("shop-bot") is None
    assert_clean(driver, gw)
    admin = httpx.get(f"{gw.base_url}/admin/routes", headers={"authorization": f"Bearer {keys['admin']}"}).json()
    assert [r["model"] for r in admin["models"]["shop-bot"]["routes"]] == [BASE]
