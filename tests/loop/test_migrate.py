"""Migration off an OpenAI fine-tune, end to end: an `ft:` model (a loopback server following
OpenAI's API) serves an alias; `migrate` trains a local adapter on that traffic, shadows it on
live requests, compares, cuts the alias over, and rollback returns it to the `ft:` model."""

from __future__ import annotations

import pytest

from adapters.loop.migrate import MigrateSettings, run_migration
from adapters.registry.promote import rollback
from adapters.registry.workspace import open_workspace
from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import FAKE_KEY_ENV, GatewayProcess, free_port
from tests.loop.conftest import QUESTIONS, feedback, settings

pytestmark = pytest.mark.slow
FT = "ft:gpt-4o-mini-2024-07-18:acme::abc123"


def _ask(gw: GatewayProcess, question: str):
    return gw.client().chat.completions.create(
        model="gpt-support", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=16)


def test_migrate_shadows_compares_cuts_over_and_rolls_back(fake_upstream, tmp_path):
    engine_port = free_port()
    config = {
        "targets": {
            "local": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{engine_port}/v1"],
                      "embedded": True, "timeout_s": 300},
            "openai": {"kind": "openai", "base_url": fake_upstream.base_url, "api_key_env": FAKE_KEY_ENV},
        },
        "models": {"gpt-support": {"routes": [{"target": "openai", "model": FT}]}},
    }
    # auth off, explicitly: the test watches /v1/admin/routes for the shadow without a key
    gw = GatewayProcess(config, tmp_path, env={"TUNELOOP_TRAIN_THREADS": "1", "TUNELOOP_AUTH": "off"})
    try:
        gw.wait_ready()
        for question in QUESTIONS:  # the ft: model's traffic, rated well by users
            reply = _ask(gw, question)
            assert reply.model == FT
            feedback(gw, reply.id, rating=1)
        ws = open_workspace(gw.config_path, home=tmp_path, gateway_url=gw.base_url)
        cfg = settings(n_epochs=4, learning_rate=5e-3)
        cfg.base_model = DEFAULT_MODEL
        cfg.dataset.has_correction = False
        ms = MigrateSettings(min_pairs=6, min_agreement=0.3, wait_s=300)  # shadows finish after replies (slowly
        # when the suite loads both cores: it returns as soon as 6 pairs are logged)

        first = run_migration(ws, "gpt-support", cfg, MigrateSettings(min_pairs=6), progress=False)
        assert (first["status"], first["stage"]) == ("running", "shadow")  # open: waits for shadow traffic
        _wait_for_routes(gw, lambda models: models["gpt-support"].get("shadow"))
        for question in QUESTIONS[:8]:  # live traffic: the user still gets the ft: model's reply
            assert _ask(gw, question).model == FT

        done = run_migration(ws, "gpt-support", cfg, ms, progress=False)  # resumes at compare
        report = done["state"]["comparison"]
        assert report["pairs"] >= 6 and report["shadow_error_rate"] == 0.0
        assert report["agreement"] >= 0.3, report
        assert done["state"]["cutover"] is True
        adapter = done["state"]["promoted"]
        _wait_for_model(gw, lambda m: m == adapter)

        rollback(ws, "gpt-support")
        _wait_for_model(gw, lambda m: m == FT)
    finally:
        gw.stop()


def _wait_for_routes(gw: GatewayProcess, ok) -> None:
    import time

    import httpx

    deadline = time.time() + 15
    while not ok(httpx.get(f"{gw.base_url}/admin/routes").json()["models"]):
        assert time.time() < deadline, "the gateway never loaded the new routes"
        time.sleep(0.3)


def _wait_for_model(gw: GatewayProcess, ok) -> None:
    import time

    deadline = time.time() + 15
    while not ok(model := _ask(gw, QUESTIONS[0]).model):
        assert time.time() < deadline, f"the alias still answers from {model}"
        time.sleep(0.5)
