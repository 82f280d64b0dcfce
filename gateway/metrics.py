"""The gateway's Prometheus metrics (``tuneloop_`` prefix, base units).

Label values are bounded: the model label is the alias from the config (unknown names
are counted as ``unknown``), target names come from the config, status is an HTTP code.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# api: "chat.completions" (POST /v1/chat/completions, and the Responses API translated onto it), "completions"
# (legacy), or "responses" (the Responses API passed through to a target that serves it)
REQUESTS = Counter("tuneloop_requests_total", "Completion requests answered",
                   ["model", "target", "arm", "status", "api"])
LATENCY = Histogram("tuneloop_request_duration_seconds", "Total request latency",
                    ["model", "arm", "stream", "api"], buckets=LATENCY_BUCKETS)
TTFT = Histogram("tuneloop_time_to_first_token_seconds", "Time to the first streamed chunk",
                 ["model"], buckets=LATENCY_BUCKETS)
TOKENS = Counter("tuneloop_tokens_total", "Tokens by kind", ["model", "kind"])
COST = Counter("tuneloop_cost_usd_total", "Cost of answered requests in USD", ["model", "project"])
RETRIES = Counter("tuneloop_retries_total", "Tries repeated on the same route after a failure",
                  ["model", "target"])
FALLBACKS = Counter("tuneloop_fallbacks_total", "Attempts that moved on to the next route",
                    ["model", "from_target"])
# source: "file" (the config YAML) or "database" (promoted routes); result: "ok" or "invalid" (kept the old table)
RELOADS = Counter("tuneloop_route_reloads_total", "Routing-table reloads by source and result", ["source", "result"])
ENGINE_RESTARTS = Counter("tuneloop_engine_restarts_total", "Embedded engine restarts after it exited on its own",
                          ["target"])


class _Children:
    """The labelled children a request touches, looked up once per label set: ``.labels()``
    costs more than the increment itself on the hot path."""

    __slots__ = ("requests", "latency", "ttft", "prompt", "completion", "cached", "cost")

    def __init__(self, model: str, target: str, arm: str, status: str, stream: str, project: str, api: str) -> None:
        self.requests = REQUESTS.labels(model, target, arm, status, api)
        self.latency = LATENCY.labels(model, arm, stream, api)
        self.ttft = TTFT.labels(model)
        self.prompt = TOKENS.labels(model, "prompt")
        self.completion = TOKENS.labels(model, "completion")
        self.cached = TOKENS.labels(model, "cached")
        self.cost = COST.labels(model, project)


_children: dict[tuple[str, ...], _Children] = {}


def observe(model: str, target: str | None, arm: str | None, status: int, stream: bool,
            latency_s: float, ttft_s: float | None, usage: dict | None,
            cost_usd: float | None = None, project: str | None = None, api: str = "chat.completions") -> None:
    key = (model, target or "", arm or "", str(status), "true" if stream else "false", project or "default", api)
    c = _children.get(key)
    if c is None:  # label values are bounded (config names, statuses), so is this cache
        c = _children[key] = _Children(*key)
    c.requests.inc()
    c.latency.observe(latency_s)
    if ttft_s is not None:
        c.ttft.observe(ttft_s)
    if usage:
        c.prompt.inc(usage.get("prompt_tokens") or 0)
        c.completion.inc(usage.get("completion_tokens") or 0)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached:
            c.cached.inc(cached)
    if cost_usd:
        c.cost.inc(cost_usd)
