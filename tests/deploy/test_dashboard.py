"""deploy/grafana/tuneloop.json is an importable dashboard with the panels operators need."""

from __future__ import annotations

import json

from tests.deploy.conftest import DEPLOY

DASH = json.loads((DEPLOY / "grafana" / "tuneloop.json").read_text())


def _exprs() -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in DASH["panels"]}


def test_dashboard_structure() -> None:
    assert DASH["uid"] == "tuneloop" and DASH["title"] and isinstance(DASH["schemaVersion"], int)
    ids = [p["id"] for p in DASH["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for p in DASH["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        own = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not own & cells, f"panel {p['title']!r} overlaps another"
        cells |= own
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"])
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))


def test_dashboard_covers_what_operators_watch() -> None:
    allx = "\n".join(e for es in _exprs().values() for e in es)
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(tuneloop_request_duration_seconds_bucket" in allx
        assert f"histogram_quantile({q}, sum by (le) (rate(tuneloop_time_to_first_token_seconds_bucket" in allx
    assert "sum by (kind) (rate(tuneloop_tokens_total" in allx
    assert "sum by (model) (rate(tuneloop_cost_usd_total" in allx
    assert "sum by (project) (increase(tuneloop_cost_usd_total" in allx
    assert "sum by (status) (rate(tuneloop_requests_total" in allx
    assert "sum by (model, arm)" in allx and 'arm!=""' in allx
    assert "tuneloop_log_queue_depth" in allx and "tuneloop_log_spool_records" in allx
    assert "vllm:lora_requests_info" in allx  # adapters on the GPU side
    assert "tuneloop_fallbacks_total" in allx
