"""The loop closed from the console alone, with a real runner: replies corrected on the interaction page, a
dataset built from the datasets page, a fine-tuning job started from it on the dataset's page; the runner
trains a LoRA on SmolLM2 (a real worker, one epoch), the job's page follows it to ``succeeded`` with its loss
curve, and the adapter's page shows its lineage back to the job, the dataset and the interactions."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.session import Console, build_dataset
from tests.fixtures.gateway import GatewayProcess, fake_config

QUESTIONS = ("Where is parcel #12?", "Can I change my delivery address?", "Do you ship to Norway?")
IDEAL = "Parcel #12 left our warehouse today; it arrives Thursday."


@pytest.fixture(scope="module")
def gw(fake_upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path_factory.mktemp("console-train"),
                        env={"TUNELOOP_AUTH": "required"})  # this gateway's runner trains the jobs it queues
    yield gw
    gw.stop()


def _attr(page: str, testid: str, name: str) -> list[str]:
    return re.findall(rf'data-testid="{testid}"[^>]*?{name}="([^"]+)"', page)


def test_a_job_started_from_the_page_trains_an_adapter_with_its_lineage(gw: GatewayProcess) -> None:
    key = gw.make_key("--project", "alpha")
    client = gw.client(api_key=key)
    ids = [client.chat.completions.create(model="lora-bot", messages=[{"role": "user", "content": q}]).id
           for q in QUESTIONS]
    console = Console(gw, key)
    try:
        for i, completion_id in enumerate(ids):  # corrections written on the interaction page
            saved = console.post(f"/completions/{completion_id}/feedback",
                                 {"correction": IDEAL if i == 0 else f"{IDEAL} ({i})", "rating": "-1"})
            assert saved.headers["location"].endswith("?saved=1"), saved.text
        dataset = build_dataset(console, {"name": "parcels", "format": "sft", "model": "lora-bot",
                                          "has_correction": "on", "min_rating": ""})
        assert 'data-testid="dataset-interactions">3<' in console.get(f"/datasets/{dataset}").text
        started = console.post(f"/datasets/{dataset}/jobs", {"model": "smollm2-135m-instruct", "n_epochs": "1",
                                                             "batch_size": "2", "suffix": "parcels"})
        assert started.status_code == 303, started.text
        job_id = started.headers["location"].rsplit("/", 1)[1]
        deadline, page = time.time() + 240, ""
        while time.time() < deadline:  # the job's page, as a person watching it would reload it
            page = console.get(f"/jobs/{job_id}").text
            status = re.search(r'data-testid="job-status">([a-z_]+)<', page)
            if status and status.group(1) in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        assert 'data-testid="job-status">succeeded<' in page, page
        assert int(_attr(page, "loss-curve", "data-steps")[0]) >= 1  # the curve of the real run

        adapters = console.get("/adapters").text
        mine = [i for i in _attr(adapters, "adapter-row", "data-id") if job_id in console.get(f"/adapters/{i}").text]
        assert len(mine) == 1, adapters
        lineage = console.get(f"/adapters/{mine[0]}").text
        assert f"/ui/jobs/{job_id}" in lineage and f"/ui/datasets/{dataset}" in lineage
        assert 'data-testid="lineage-interactions">3 interactions<' in lineage
        assert 'data-testid="adapter-status">candidate<' in lineage
    finally:
        console.close()
