"""vLLM's production metrics on the real engine: the samples of ``/metrics`` after known traffic.

Every value is checked against what the traffic implies (the replies' finish reasons and usage), as a
difference between two scrapes, since the engine is shared with other tests.  The unit of vLLM's
request-level series is one choice (an ``n=2`` request counts twice).  The dashboard's Engine row may
only query series (and labels) the engine exposes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.engine.metrics import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from adapters.engine.model import BASE_MODEL_NAME
from tests.deploy import promql
from tests.deploy.conftest import DEPLOY

pytestmark = pytest.mark.slow

LONG = ("Here is a long note about the garden: the roses need water twice a week, the tomatoes want sun "
        "all day, the basil must be cut before it flowers, and the old apple tree should be pruned in "
        "winter. Summarize it in one short sentence.")


@dataclass
class Scrape:
    samples: list[Any]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(url: str) -> Scrape:
    text = httpx.get(url + "/metrics", timeout=10).text
    families = list(text_string_to_metric_families(text))
    return Scrape([s for f in families for s in f.samples], {f.name: f.type for f in families})


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def idle(url: str) -> None:
    def quiet() -> bool:
        s = scrape(url)
        return s.value("vllm:num_requests_running") == 0 and s.value("vllm:num_requests_waiting") == 0
    wait_for(quiet, "the engine did not go idle")


@dataclass
class Traffic:
    """What the requests sent imply: per request (prompt tokens, n, cached, max_tokens, tokens per choice)."""

    requests: list[tuple[int, int, int, int, list[int]]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # one per choice
    repeat_cached: tuple[int, int] = (0, 0)  # (prompt tokens, cached tokens) of the repeated long prompt

    def choices(self) -> int:
        return sum(n for _, n, _, _, _ in self.requests)

    def total(self, f: Callable[[int, int, int, int, list[int]], float]) -> float:
        return sum(f(*r) for r in self.requests)


@pytest.fixture(scope="module")
def client(engine_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def traffic(engine_server, client) -> tuple[Traffic, Scrape, Scrape]:
    """Plain, streamed, max_tokens-bound, adapter, n=2 and repeated requests, one after another."""
    url, t = engine_server.root_url, Traffic()
    idle(url)
    before = scrape(url)

    def record(r: Any, max_tokens: int, n: int = 1, per_choice: list[int] | None = None) -> int:
        cached = (r.usage.prompt_tokens_details.cached_tokens or 0) if r.usage.prompt_tokens_details else 0
        tokens = per_choice or [r.usage.completion_tokens]
        t.requests.append((r.usage.prompt_tokens, n, cached, max_tokens, tokens))
        t.reasons += [c.finish_reason for c in r.choices]
        return int(cached)

    def ask(content: str, max_tokens: int, model: str = BASE_MODEL_NAME, **kw: Any) -> Any:
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                              temperature=0, max_tokens=max_tokens, **kw)

    record(ask("What is the capital of France?", 12), 12)
    chunks = list(ask("Name three colors.", 8, stream=True, stream_options={"include_usage": True}))
    reason = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    t.requests.append((usage.prompt_tokens, 1, cached or 0, 8, [usage.completion_tokens]))
    t.reasons += reason
    r = ask("Write a long story about a dragon.", 3, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    record(r, 3)
    record(ask("Say hello.", 6, model="t1"), 6)
    r = ask("Count to ten.", 4, n=2, extra_body={"ignore_eos": True})
    assert [c.finish_reason for c in r.choices] == ["length", "length"] and r.usage.completion_tokens == 8
    record(r, 4, n=2, per_choice=[4, 4])
    record(ask(LONG, 2), 2)
    r = ask(LONG, 2)
    t.repeat_cached = (r.usage.prompt_tokens, record(r, 2))
    idle(url)
    # vllm:iteration_tokens_total is observed at the end of the loop iteration, just after the last reply

    def caught_up() -> bool:
        now = scrape(url)
        tokens = ["vllm:prompt_tokens_total", "vllm:generation_tokens_total"]
        return (now.value("vllm:iteration_tokens_total_sum") - before.value("vllm:iteration_tokens_total_sum")
                == sum(now.value(n) - before.value(n) for n in tokens))

    wait_for(caught_up, "iteration_tokens_total did not catch up")
    return t, before, scrape(url)


def test_request_counts_and_token_sums(traffic) -> None:
    t, before, after = traffic

    def d(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    choices, prompt = t.choices(), t.total(lambda p, n, c, m, g: p * n)
    generated, cached = t.total(lambda p, n, c, m, g: sum(g)), t.total(lambda p, n, c, m, g: c * n)
    for reason in ("stop", "length", "abort", "error"):
        assert d("vllm:request_success_total", finished_reason=reason) == t.reasons.count(reason), reason
    assert t.reasons.count("length") >= 3
    assert d("vllm:request_prompt_tokens_sum") == prompt and d("vllm:request_prompt_tokens_count") == choices
    assert d("vllm:prompt_tokens_total") == prompt
    assert d("vllm:request_generation_tokens_sum") == generated == d("vllm:generation_tokens_total")
    assert d("vllm:request_generation_tokens_count") == choices
    # prefix cache, in tokens, per choice: the hits are the replies' cached tokens
    assert d("vllm:prefix_cache_queries_total") == prompt
    assert d("vllm:prefix_cache_hits_total") == cached > 0
    tokens, hit = t.repeat_cached
    assert hit == (tokens - 1) // 16 * 16  # the repeated prompt: all but its last partial block was cached
    assert d("vllm:prompt_tokens_by_source_total", source="local_cache_hit") == cached
    assert d("vllm:prompt_tokens_by_source_total", source="local_compute") == prompt - cached
    assert d("vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == 0
    assert d("vllm:prompt_tokens_cached_total") == cached and d("vllm:prompt_tokens_recomputed_total") == 0
    assert d("vllm:request_prefill_kv_computed_tokens_sum") == prompt - cached
    # the request parameters: n and max_tokens, and the most tokens a request's choices generated
    assert d("vllm:request_params_n_count") == len(t.requests) and d("vllm:request_params_n_sum") == choices
    assert d("vllm:request_params_max_tokens_sum") == t.total(lambda p, n, c, m, g: m * n)
    assert d("vllm:request_params_max_tokens_count") == choices
    assert d("vllm:request_max_num_generation_tokens_sum") == t.total(lambda p, n, c, m, g: max(g))
    assert d("vllm:request_max_num_generation_tokens_count") == len(t.requests)
    # one TTFT per choice, one inter-token latency per later token
    assert d("vllm:time_to_first_token_seconds_count") == choices
    assert d("vllm:inter_token_latency_seconds_count") == generated - choices
    several = sum(1 for _, _, _, _, g in t.requests for k in g if k > 1)
    assert d("vllm:request_time_per_output_token_seconds_count") == several
    for name in ("e2e_request_latency", "request_queue_time", "request_prefill_time", "request_decode_time",
                 "request_inference_time"):
        assert d(f"vllm:{name}_seconds_count") == choices, name
    # inference = prefill + decode (admitted -> first -> last token), all within the end-to-end latency
    prefill, decode = d("vllm:request_prefill_time_seconds_sum"), d("vllm:request_decode_time_seconds_sum")
    inference = d("vllm:request_inference_time_seconds_sum")
    assert inference == pytest.approx(prefill + decode, abs=1e-6) and prefill > 0 and decode > 0
    assert d("vllm:e2e_request_latency_seconds_sum") >= d("vllm:request_queue_time_seconds_sum") + inference - 1e-6
    assert d("vllm:iteration_tokens_total_sum") == prompt + generated
    assert after.value("vllm:num_preemptions_total") == 0


def test_labels_types_and_buckets(traffic) -> None:
    _, _, after = traffic
    for s in after.samples:
        if s.name.startswith("vllm:") and not s.name.startswith(("vllm:lora_requests_info", "vllm:cache_config")):
            assert s.labels["model_name"] == BASE_MODEL_NAME and s.labels["engine"] == "0", s
    types = after.types
    for name in ("vllm:request_success", "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:prefix_cache_hits",
                 "vllm:prefix_cache_queries", "vllm:num_preemptions"):
        assert types[name] == "counter", name
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:cache_config_info", "vllm:engine_sleep_state"):
        assert types[name] == "gauge", name
    for name in ("vllm:iteration_tokens_total", "vllm:request_params_n", "vllm:request_prompt_tokens",
                 "vllm:inter_token_latency_seconds", "vllm:request_queue_time_seconds"):
        assert types[name] == "histogram", name

    def bounds(name: str) -> list[float]:
        return sorted(float(x["le"]) for x in after.labels(name + "_bucket"))

    inf = [float("inf")]
    assert bounds("vllm:time_to_first_token_seconds") == [*TTFT_BUCKETS, *inf]
    assert bounds("vllm:inter_token_latency_seconds") == [*ITL_BUCKETS, *inf]
    assert bounds("vllm:e2e_request_latency_seconds") == [*REQUEST_LATENCY_BUCKETS, *inf]
    assert bounds("vllm:request_params_n") == [1, 2, 5, 10, 20, *inf]
    assert bounds("vllm:request_prompt_tokens")[:6] == [1, 2, 5, 10, 20, 50]
    [info] = after.labels("vllm:cache_config_info")
    assert info["block_size"] == "16" and info["enable_prefix_caching"] == "True" and info["engine"] == "0"
    assert int(info["num_gpu_blocks"]) > 0 and int(info["kv_cache_memory_bytes"]) > 0
    assert after.value("vllm:cache_config_info") == 1
    assert after.value("vllm:engine_sleep_state", sleep_state="awake") == 1
    assert 0 <= after.value("vllm:kv_cache_usage_perc") <= 1


def test_disconnect_counts_an_abort(engine_server, traffic) -> None:
    url = engine_server.root_url
    idle(url)
    before = scrape(url)
    body = {"model": BASE_MODEL_NAME, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "stream": True, "max_tokens": 400, "ignore_eos": True, "temperature": 0}
    with httpx.Client(timeout=60) as h, h.stream("POST", engine_server.base_url + "/chat/completions",
                                                  json=body) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 4:
                break

    def d(name: str, **labels: str) -> float:
        return scrape(url).value(name, **labels) - before.value(name, **labels)

    wait_for(lambda: d("vllm:request_success_total", finished_reason="abort") == 1, "no abort counted")
    idle(url)
    assert d("vllm:request_success_total") == 1 and d("tuneloop:engine_aborted_requests_total") == 1
    for name in ("vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
                 "vllm:request_prefill_time_seconds", "vllm:request_generation_tokens"):
        assert d(name + "_count") == 1, name
    assert 3 <= d("vllm:request_generation_tokens_sum") < 400
    assert d("vllm:request_params_max_tokens_sum") == 400


def _engine_row() -> list[dict[str, Any]]:
    panels = json.loads((DEPLOY / "grafana" / "tuneloop.json").read_text())["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Engine")
    row = []
    for p in panels[start + 1:]:
        if p["type"] == "row":
            break
        row.append(p)
    return row


def _base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_dashboard_engine_row_queries_exposed_series(traffic) -> None:
    _, _, after = traffic
    exposed: dict[str, set[str]] = {}
    for s in after.samples:
        exposed.setdefault(_base(s.name), set()).update(s.labels)
    dash = json.loads((DEPLOY / "grafana" / "tuneloop.json").read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "model_name")
    assert var["query"]["query"] == "label_values(vllm:num_requests_running, model_name)"
    row = _engine_row()
    exprs = [t["expr"] for p in row for t in p["targets"]]
    assert len(row) >= 8 and all('model_name=~"$model_name"' in e for e in exprs)
    names = {_base(n) for e in exprs for n in re.findall(r"vllm:[a-z0-9_:]+", e)}
    for want in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:request_queue_time_seconds", "vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total", "vllm:request_success_total",
                 "vllm:generation_tokens_total"):
        assert want in names, want
    for name in names:
        assert name in exposed, f"the Engine row queries {name}, which the engine does not expose"
    for expr in exprs:
        for metric, matchers in promql.selectors(expr):
            assert set(matchers) <= exposed[_base(metric)], (expr, matchers)
        have = set().union(*(exposed[_base(n)] for n in promql.metric_names(expr))) | {"le"}
        assert promql.grouping_labels(expr) <= have, expr
