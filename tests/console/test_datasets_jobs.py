"""The console's datasets and jobs pages (/ui/datasets, /ui/jobs) against a real `tuneloop serve` that asks for
keys: a dataset built from the page (``tuneloop dataset build`` as a child process) holds a correction saved
over the API and shows it in its preview; a job started from the dataset is the queue's row
(``POST /v1/fine_tuning/jobs``'s code) and is cancelled from the page; another project sees none of it. In the
browser (one test): a running job's loss curve, drawn from its metrics events and refreshed while it runs,
with no script error and nothing asked of any other origin.

No runner trains here (TUNELOOP_TRAINING_RUNNER=0): the curve's job and its events are written through the
store, as the training side writes them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.store import db
from gateway.store.datasets import DatasetRow, DatasetStore
from gateway.store.jobs import JobStore
from tests.console import browser as chrome
from tests.console.session import Console, build_dataset
from tests.console.test_console import assert_clean, by, sign_in, ui, wait_for, wait_until
from tests.fixtures.gateway import GatewayProcess, fake_config

IDEAL = "Your parcel #77 ships tomorrow morning; sorry for the wait!"
SECRET_B = "beta-only-question"


@pytest.fixture(scope="module")
def gw(fake_upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("console-datasets"),
                        env={"TUNELOOP_AUTH": "required", "TUNELOOP_TRAINING_RUNNER": "0"})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keys(gw: GatewayProcess) -> dict[str, str]:
    return {"a": gw.make_key("--project", "alpha"), "b": gw.make_key("--project", "beta")}


@pytest.fixture(scope="module")
def engine(gw: GatewayProcess) -> Any:
    url = os.environ.get("TUNELOOP_DATABASE_URL") or db.default_database_url(gw.home)
    engine = db.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def corrected(gw: GatewayProcess, keys: dict[str, str]) -> str:
    """An alpha reply corrected through POST /v1/feedback, one more alpha reply, and a beta one."""
    a, b = gw.client(api_key=keys["a"]), gw.client(api_key=keys["b"])
    made = a.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": "Where is parcel #77?"}])
    a.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": "uncorrected question"}])
    b.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": SECRET_B}])
    saved = httpx.post(f"{gw.base_url}/feedback", headers={"authorization": f"Bearer {keys['a']}"},
                       json={"completion_id": made.id, "correction": IDEAL, "rating": -1})
    assert saved.status_code == 200, saved.text
    return made.id


@pytest.fixture(scope="module")
def built(gw: GatewayProcess, keys: dict[str, str], corrected: str) -> str:
    """A dataset built from the page: alpha's corrected lora-bot replies. Returns its id."""
    alpha = Console(gw, keys["a"])
    try:
        return build_dataset(alpha, {"name": "parcels", "format": "sft", "model": "lora-bot",
                                     "has_correction": "on", "min_rating": ""})
    finally:
        alpha.close()


def test_a_dataset_built_from_the_page_holds_the_correction(gw: GatewayProcess, keys: dict[str, str],
                                                            built: str) -> None:
    alpha, beta = Console(gw, keys["a"]), Console(gw, keys["b"])
    try:
        page = alpha.get(f"/datasets/{built}")
        assert page.status_code == 200
        assert page.text.count('data-testid="preview-line"') == 1  # only the corrected reply
        assert IDEAL.replace("'", "&#39;") in page.text and "uncorrected question" not in page.text
        assert 'data-testid="dataset-interactions">1<' in page.text
        assert '"has_correction": true' in page.text and '"project": "alpha"' in page.text
        assert "tuneloop dataset build" in alpha.get("/datasets").text  # the command, to run it from a shell
        assert beta.get(f"/datasets/{built}").status_code == 404  # another project's set is not found
        assert built not in beta.get("/datasets").text
        refused = alpha.post("/datasets", {"name": "x"}, csrf=False)
        assert refused.status_code == 403
    finally:
        alpha.close()
        beta.close()


def test_a_set_whose_lines_all_went_to_validation_previews_them(gw: GatewayProcess, keys: dict[str, str],
                                                               engine: Any, tmp_path: Any) -> None:
    """A set too small for both splits may hold every line in its validation file (the split follows each
    record's id): the page shows those lines, marked, rather than saying the file cannot be read."""
    train, val = tmp_path / "tiny.jsonl", tmp_path / "tiny.val.jsonl"
    train.write_text("")
    val.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "held out"}]}\n')
    DatasetStore(engine).create(DatasetRow(id="ds-valonly", name="tiny", kind="sft", path=str(train), rows=0,
                                           sha256="-", project="alpha", val_path=str(val), val_rows=1))
    alpha = Console(gw, keys["a"])
    try:
        page = alpha.get("/datasets/ds-valonly")
        assert page.status_code == 200
        assert page.text.count('data-testid="preview-line" data-split="validation"') == 1
        assert "held out" in page.text and "not readable" not in page.text
    finally:
        alpha.close()


def test_a_job_started_from_the_dataset_is_queued_and_cancelled_from_the_page(
        gw: GatewayProcess, keys: dict[str, str], built: str) -> None:
    alpha, beta = Console(gw, keys["a"]), Console(gw, keys["b"])
    api = {"authorization": f"Bearer {keys['a']}"}
    try:
        bad = alpha.post(f"/datasets/{built}/jobs", {"model": "no-such-base"})
        assert bad.status_code == 400 and 'data-testid="error"' in bad.text
        started = alpha.post(f"/datasets/{built}/jobs", {"model": "smollm2-135m-instruct", "n_epochs": "2"})
        assert started.status_code == 303, started.text
        job_id = started.headers["location"].rsplit("/", 1)[1]
        job = httpx.get(f"{gw.base_url}/fine_tuning/jobs/{job_id}", headers=api).json()  # the API's own job
        assert job["status"] == "validating_files" and job["hyperparameters"]["n_epochs"] == 2
        assert job["organization_id"] == "alpha"
        page = alpha.get(f"/jobs/{job_id}").text
        assert 'data-testid="job-status">validating_files<' in page and "Created fine-tuning job" in page
        assert job_id in alpha.get("/jobs").text and job_id not in beta.get("/jobs").text
        assert beta.get(f"/jobs/{job_id}").status_code == 404
        assert beta.post(f"/jobs/{job_id}/cancel").status_code == 404
        assert alpha.post(f"/jobs/{job_id}/cancel").headers["location"].endswith("?cancelled=1")
        assert httpx.get(f"{gw.base_url}/fine_tuning/jobs/{job_id}", headers=api).json()["status"] == "cancelled"
        assert alpha.post(f"/jobs/{job_id}/cancel").headers["location"].endswith("?cancelled=0")
    finally:
        alpha.close()
        beta.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = chrome.start()
    yield browser
    browser.quit()


def test_the_pages_in_a_browser_and_a_live_loss_curve(driver: Any, gw: GatewayProcess, keys: dict[str, str],
                                                      engine: Any, built: str) -> None:
    store = JobStore(engine)
    job = store.create({"backend": "local", "model": "smollm2-135m-instruct", "project": "alpha", "status": "running",
                        "dataset_id": built, "method": {"type": "supervised", "supervised": {"hyperparameters": {
                            "n_epochs": 3, "batch_size": 4}}}, "seed": 7, "worker_pid": 1})
    for step in range(1, 6):
        loss = 2.4 / step ** 0.5
        store.add_event(job["id"], f"Step {step}/12: train_loss={loss:.4g}", type="metrics",
                        data={"step": step, "total_steps": 12, "train_loss": loss, "tokens_per_s": 900.0})
    store.add_event(job["id"], "Step 5/12: valid_loss=1.3", type="metrics",
                    data={"step": 5, "total_steps": 12, "valid_loss": 1.3})
    sign_in(driver, gw, keys["a"])
    driver.find_element(*by("nav-datasets")).click()
    wait_for(driver, "dataset-row")
    chrome.screenshot(driver, "datasets")
    driver.get(ui(gw, f"datasets/{built}"))
    assert IDEAL in wait_for(driver, "preview-line").text
    chrome.screenshot(driver, "dataset")
    driver.find_element(*by("nav-jobs")).click()
    assert job["id"] in [r.get_attribute("data-id") for r in driver.find_elements(*by("job-row"))]
    chrome.screenshot(driver, "jobs")
    driver.get(ui(gw, f"jobs/{job['id']}"))
    wait_until(driver, lambda d: d.find_element(*by("loss-curve")).get_attribute("data-steps") == "5")
    assert driver.find_elements(*by("curve-train_loss")) and driver.find_elements(*by("curve-valid_loss"))
    for step in range(6, 9):  # the worker goes on: the page follows without a reload
        store.add_event(job["id"], f"Step {step}/12", type="metrics",
                        data={"step": step, "total_steps": 12, "train_loss": 2.4 / step ** 0.5})
    wait_until(driver, lambda d: d.find_element(*by("loss-curve")).get_attribute("data-steps") == "8")
    chrome.screenshot(driver, "job")
    store.finish(job["id"], "succeeded", fine_tuned_model="smollm2-135m-instruct-ft-parcels")
    wait_until(driver, lambda d: d.find_element(*by("job-status")).text == "succeeded")
    assert not driver.find_elements(*by("cancel-job"))
    assert_clean(driver, gw)
