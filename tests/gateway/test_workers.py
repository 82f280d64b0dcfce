"""Several gateway worker processes: metrics add up across them, SIGTERM loses nothing."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway import GatewayProcess, fake_config


def _requests_total(gw: GatewayProcess, model: str) -> float:
    text = httpx.get(f"{gw.root}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "tuneloop_requests_total" and s.labels.get("model") == model)


def test_two_workers_share_metrics_and_flush_on_sigterm(fake_upstream, tmp_path):
    gw = GatewayProcess(fake_config(fake_upstream), tmp_path, args=["--workers", "2"])
    try:
        client = gw.client()
        for _ in range(30):
            raw = client.chat.completions.with_raw_response.create(
                model="lora-bot", messages=[{"role": "user", "content": "hi"}])
            assert raw.parse().choices
        for _ in range(20):  # new connections land on either worker; each scrape sees the total
            assert _requests_total(gw, "lora-bot") == 30
        families = text_string_to_metric_families(httpx.get(f"{gw.root}/metrics").text)
        assert any(s.name == "tuneloop_log_queue_depth" for f in families for s in f.samples)
    finally:
        assert gw.stop() == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path}/tuneloop.db")
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from interactions where requested_model='lora-bot'")).scalar()
    assert n == 30
