"""Cost per request: priced from the target's table, in the header, the log, metrics and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

MSG = [{"role": "user", "content": "one two three"}]
PRICES = {"input": 0.30, "cached_input": 0.15, "output": 1.20}  # the ft-bot target's, per 1M


def _metric(gateway, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{gateway.root}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_cost_reaches_header_log_metrics_and_report(gateway):
    before = _metric(gateway, "tuneloop_cost_usd_total", model="ft-bot", project="default")
    raw = gateway.client().chat.completions.with_raw_response.create(model="ft-bot", messages=MSG)
    usage = raw.parse().usage
    expected = (usage.prompt_tokens * PRICES["input"] + usage.completion_tokens * PRICES["output"]) / 1e6
    assert float(raw.headers["x-tuneloop-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    after = _metric(gateway, "tuneloop_cost_usd_total", model="ft-bot", project="default")
    assert after - before == pytest.approx(expected, rel=1e-6)
    # streamed calls are priced too (the gateway asks the upstream for usage)
    list(gateway.client().chat.completions.create(model="ft-bot", messages=MSG, stream=True))
    assert _metric(gateway, "tuneloop_cost_usd_total", model="ft-bot", project="default") == \
        pytest.approx(after + expected, rel=1e-6)
    httpx.get(f"{gateway.base_url}/chat/completions", params={"limit": 1})  # read-your-writes barrier
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "costs", "--json", "--by", "model", "--config",
         str(gateway.config_path)], env={**os.environ, "TUNELOOP_HOME": str(gateway.home)},
        capture_output=True, text=True, check=True).stdout
    rows = {r["model"]: r for r in json.loads(out)}
    assert rows["ft-bot"]["cost_usd"] >= 2 * expected * 0.999
    assert rows["ft-bot"]["requests"] >= 2
