"""The alert rules and the dashboard query only metrics the gateway really exposes.

PromQL expressions come from deploy/base/prometheusrule.yaml and deploy/grafana/tuneloop.json;
each ``tuneloop_*`` metric (and the labels its selectors match on) must be in the
``/metrics`` of a real ``tuneloop serve`` after traffic. vLLM metrics must be among those vLLM
documents (docs/design/metrics.md, see /work/shared/CONTRACTS.md section 7). promtool, when
installed (Debian: ``apt-get install prometheus``), checks the syntax and unit-tests alerts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import promql
from tests.deploy.conftest import DEPLOY, ROOT

RULES = yaml.safe_load((DEPLOY / "base" / "prometheusrule.yaml").read_text())
DASHBOARD = json.loads((DEPLOY / "grafana" / "tuneloop.json").read_text())
VLLM_METRICS = {  # vLLM's documented metrics (histograms/counters by their base name)
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:lora_requests_info", "vllm:request_success_total", "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds", "vllm:request_inference_time_seconds",
    "vllm:request_time_per_output_token_seconds", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total", "vllm:iteration_tokens_total", "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens", "vllm:cache_config_info",
}
PROMETHEUS_METRICS = {"up"}  # written by Prometheus itself for every target
NOT_YET = {  # referenced before the gateway exposes them: must fail until it does
    "tuneloop_cost_usd_total": "the gateway does not export tuneloop_cost_usd_total{model,project} yet",
}
GATEWAY_SOURCE = "\n".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py"))


def expressions() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the rules and the dashboard."""
    out = [(f"alert {r.get('alert') or r.get('record')}", r["expr"])
           for g in RULES["spec"]["groups"] for r in g["rules"]]
    for p in DASHBOARD["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, q
            out.append((f"variable {var['name']}", m.group(1)))
    return out


EXPRS = expressions()
REFERENCED = sorted({n for _, e in EXPRS for n in promql.metric_names(e)})
TUNELOOP = [n for n in REFERENCED if n.startswith("tuneloop_")]


def _base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


@pytest.fixture(scope="module")
def exposed(gateway: Any) -> dict[str, set[str]]:
    """Sample name -> label names, from the gateway's /metrics after varied traffic."""
    client = gateway.client()
    msgs = [{"role": "user", "content": "hello metrics"}]
    client.chat.completions.create(model="lora-bot", messages=msgs)
    for _ in client.chat.completions.create(model="lora-bot", messages=msgs, stream=True,
                                            stream_options={"include_usage": True}):
        pass
    client.chat.completions.create(model="ft-bot", messages=msgs)         # a priced target
    client.chat.completions.create(model="with-fallback", messages=msgs)  # dead -> fallback
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="err500", messages=msgs)
    resp = httpx.get(f"{gateway.root}/metrics", timeout=10)
    assert resp.status_code == 200
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples.setdefault(s.name, set()).update(s.labels)
    assert "tuneloop_requests_total" in samples, resp.text[:2000]
    return samples


def test_every_expression_selects_a_metric() -> None:
    assert len(EXPRS) > 30
    for where, expr in EXPRS:
        assert promql.metric_names(expr), f"{where}: no metric found in {expr!r}"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{x=~"5.{2}", y!=""}[5m]))) '
            '> on (model) group_left 0.01 + 2 * sum without (le) (b_total offset 1h) '
            'and vllm:c{pod="p"} unless absent(up{job="j"} == 1) or count_values("v", d[$__range:1m])')
    assert promql.metric_names(expr) == {"a_bucket", "b_total", "vllm:c", "up", "d"}
    assert promql.grouping_labels(expr) == {"le", "model"}
    assert ("a_bucket", {"x": '"5.{2}"', "y": '""'}) in promql.selectors(expr)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[n]))
    if n in NOT_YET and n not in GATEWAY_SOURCE else n
    for n in TUNELOOP])
def test_tuneloop_metric_is_exposed(name: str, exposed: dict[str, set[str]]) -> None:
    assert name in exposed, f"{name} is queried but the gateway does not expose it"
    for where, expr in EXPRS:
        names = promql.metric_names(expr)
        if name not in names:
            continue
        for metric, matchers in promql.selectors(expr):
            if metric == name:
                assert set(matchers) <= exposed[name], f"{where}: {name} has no label {set(matchers) - exposed[name]}"
        if all(n.startswith("tuneloop_") for n in names):
            have = set().union(*(exposed.get(n, set()) for n in names)) | {"le"}
            assert promql.grouping_labels(expr) <= have, f"{where}: groups by labels {name} lacks"


def test_other_metrics_are_documented_vllm_or_prometheus_ones() -> None:
    others = [n for n in REFERENCED if not n.startswith("tuneloop_")]
    assert any(n.startswith("vllm:") for n in others)
    for n in others:
        assert n in PROMETHEUS_METRICS or _base(n) in VLLM_METRICS, f"unknown metric {n}"


def test_histograms_are_queried_by_bucket() -> None:
    """histogram_quantile needs the _bucket series; a bare histogram name selects nothing."""
    for where, expr in EXPRS:
        if "histogram_quantile" in expr:
            assert all(n.endswith("_bucket") for n in promql.metric_names(expr)), where


# --- promtool ------------------------------------------------------------------------------

def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_promtool_checks_rules_and_dashboard_queries(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": RULES["spec"]["groups"]}))
    out = _run([promtool, "check", "rules", str(rules)])
    assert out.returncode == 0, out.stdout + out.stderr
    # the dashboard's queries, with Grafana's variables filled in, as recording rules
    subst = {"$__rate_interval": "1m", "$__range": "6h", "$model_name": ".*", "$model": ".*"}
    records = []
    for i, (_, expr) in enumerate(EXPRS):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, expr
        records.append({"record": f"dashboard:query_{i}", "expr": expr})
    dash = tmp_path / "dashboard.yaml"
    dash.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    out = _run([promtool, "check", "rules", str(dash)])
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "X", "expr": "sum by (a) (rate(x[5m])) > on (a) group_left (2 * y)"}]}]}))
    assert _run([promtool, "check", "rules", str(broken)]).returncode != 0


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    """The alerts fire on the series they are meant for and stay quiet otherwise
    (tests/deploy/alerts_test.yaml)."""
    promtool = _promtool()
    # annotations are left out here (promtool compares them verbatim); check rules renders them
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
              for g in RULES["spec"]["groups"]]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tests = yaml.safe_load((Path(__file__).parent / "alerts_test.yaml").read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests))
    out = subprocess.run([promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
