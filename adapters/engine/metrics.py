"""Prometheus metrics under vLLM's names, types, labels and buckets, in a registry per engine.

The reference is vLLM v1's ``PrometheusStatLogger`` (``vllm/v1/metrics/loggers.py``, the series of
docs.vllm.ai "Production Metrics").  Every ``vllm:`` series but two carries ``model_name`` (the served
name) and ``engine`` (``"0"``: one engine core), as in vLLM v1; the unit of the request-level series is
one choice, as vLLM's engine requests are (``request_stats.py``, which also says how each is fed).

Exposed:

* scheduler state: ``num_requests_running`` / ``num_requests_waiting`` (choices in the batch / queued),
  ``kv_cache_usage_perc`` (bytes the KV cache holds over its budget), ``engine_sleep_state``
  (``sleep_state`` awake / weights_offloaded / discard_all: always awake), ``cache_config_info`` (a gauge
  at 1 whose labels are the cache config: ``block_size`` (the prefix cache's 16), ``num_gpu_blocks`` (the
  budget in such blocks), ``kv_cache_memory_bytes``, ``enable_prefix_caching``, ``cache_dtype``, ...,
  ``engine``; no ``model_name``, as in vLLM) and ``lora_requests_info`` (labels ``running_lora_adapters``,
  ``waiting_lora_adapters``, ``max_lora``; its value a timestamp);
* tokens: ``prompt_tokens_total``, ``prompt_tokens_by_source_total{source=local_compute|local_cache_hit|
  external_kv_transfer}``, ``prompt_tokens_cached_total``, ``prompt_tokens_recomputed_total`` (always 0),
  ``generation_tokens_total``, ``iteration_tokens_total`` (histogram, per scheduler-loop iteration);
* ``prefix_cache_queries_total`` / ``prefix_cache_hits_total``: prompt tokens looked up / found in the
  prefix cache (``prefix.py``), per choice when it is admitted;
* ``num_preemptions_total``: always 0, since admission reserves each row's worst case (``admission.py``) and
  the scheduler never preempts nor requeues a running request;
* ``request_success_total{finished_reason=stop|length|abort|error}``: choices ended, by why (``abort``:
  the client went away; ``error``: a fault in its row, a 500);
* latency histograms, in seconds: ``time_to_first_token``, ``inter_token_latency``,
  ``request_time_per_output_token``, ``e2e_request_latency``, ``request_queue_time``,
  ``request_prefill_time``, ``request_decode_time``, ``request_inference_time``;
* count histograms: ``request_prompt_tokens``, ``request_generation_tokens``,
  ``request_prefill_kv_computed_tokens``, ``request_params_max_tokens``, ``request_params_n``,
  ``request_max_num_generation_tokens`` (the most tokens one of a request's choices generated, which is
  what vLLM observes under that name).

Not exposed, because they do not apply to this engine:

* speculative decoding (``spec_decode_*``): there is no draft model;
* KV transfer between instances (``external_prefix_cache_queries`` / ``_hits``, KV connector, NIXL and
  ``kv_offload_*`` series): no KV connector, no disaggregated prefill, no CPU offload tier (the KV cache is
  already in CPU memory); ``source="external_kv_transfer"`` stays 0 for the same reason;
* the multimodal cache (``mm_cache_queries`` / ``_hits``): text-only models;
* vLLM's v0-era and deprecated series, hidden by v1: ``gpu_cache_usage_perc``, ``gpu_prefix_cache_*``,
  ``cpu_cache_usage_perc``, ``num_requests_swapped`` (no swap space), ``time_per_output_token_seconds``
  (hidden since 0.12, removed in 0.13: renamed ``inter_token_latency_seconds``);
* opt-in debugging series: ``corrupted_requests`` (``VLLM_COMPUTE_NANS_IN_LOGITS``), the ``kv_block_*``
  residency histograms (``--kv-cache-metrics``; this KV cache is rows, not blocks), perf/MFU series;
* ``num_requests_waiting_by_reason{reason=capacity|deferred}`` (recent vLLM): the admission here does not
  attribute a wait to one reason; ``num_requests_waiting`` counts them all.  ``finished_reason=
  "repetition"`` (vLLM's repetition detection) never happens here either.

The ``tuneloop:engine_*`` series are this engine's own (aborted and failed requests, KV bytes, adapters).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adapters.engine.request_stats import Recorder

ENGINE = "0"
FINISH_REASONS = ("stop", "length", "abort", "error")
TOKEN_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """vLLM's buckets for token counts: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out: list[int] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return out
            out.append(m * scale)
        scale *= 10


class EngineMetrics(Recorder):
    def __init__(self, model_name: str, max_model_len: int = 8192):
        self.registry = r = CollectorRegistry()
        self.model_name = model_name
        lab, own = ["model_name", "engine"], ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, lab, registry=r).labels(model_name, ENGINE)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, lab, registry=r).labels(model_name, ENGINE)

        def hist(name: str, doc: str, buckets: tuple[float, ...] | list[int]) -> Histogram:
            return Histogram(name, doc, lab, buckets=buckets, registry=r).labels(model_name, ENGINE)

        tokens = build_1_2_5_buckets(max_model_len)
        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        sleep = Gauge("vllm:engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; "
                      "awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; "
                      "discard_all = 1 means sleep level 2.", lab + ["sleep_state"], registry=r)
        for state in ("awake", "weights_offloaded", "discard_all"):
            sleep.labels(model_name, ENGINE, state).set(1 if state == "awake" else 0)
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        by_source = Counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
                            lab + ["source"], registry=r)
        self.prompt_by_source = {s: by_source.labels(model_name, ENGINE, s) for s in TOKEN_SOURCES}
        self.prompt_cached = counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).")
        self.prompt_recomputed = counter("vllm:prompt_tokens_recomputed",
                                         "Number of cached tokens recomputed for forward pass.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          lab + ["finished_reason"], registry=r)
        self.success = {f: success.labels(model_name, ENGINE, f) for f in FINISH_REASONS}
        self.request_prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.request_generation_tokens = hist("vllm:request_generation_tokens",
                                              "Number of generation tokens processed.", tokens)
        self.iteration_tokens = hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                     ITERATION_BUCKETS)
        self.request_max_generation = hist("vllm:request_max_num_generation_tokens",
                                           "Histogram of maximum number of requested generation tokens.", tokens)
        self.request_n = hist("vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        self.request_max_tokens = hist("vllm:request_params_max_tokens",
                                       "Histogram of the max_tokens request parameter.", tokens)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                        ITL_BUCKETS)
        self.tpot = hist("vllm:request_time_per_output_token_seconds",
                         "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        latency = REQUEST_LATENCY_BUCKETS
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", latency)
        self.queue_time = hist("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", latency)
        self.inference_time = hist("vllm:request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.", latency)
        self.prefill_time = hist("vllm:request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.", latency)
        self.decode_time = hist("vllm:request_decode_time_seconds",
                                "Histogram of time spent in DECODE phase for request.", latency)
        self.request_kv_computed = hist("vllm:request_prefill_kv_computed_tokens",
                                        "Histogram of new KV tokens computed during prefill (excluding cached "
                                        "tokens).", tokens)

        def mine(cls: Any, name: str, doc: str) -> Any:
            return cls(name, doc, own, registry=r).labels(model_name)

        self.aborted = mine(Counter, "tuneloop:engine_aborted_requests", "Requests aborted (client gone).")
        self.failed = mine(Counter, "tuneloop:engine_failed_requests",
                           "Requests failed inside a step (the others went on).")
        self.kv_bytes = mine(Gauge, "tuneloop:engine_kv_cache_bytes", "Bytes the KV cache holds now.")
        self.kv_peak_bytes = mine(Gauge, "tuneloop:engine_kv_cache_peak_bytes", "The most bytes the KV cache has "
                                  "held (resizes included); never above the budget.")
        self.loras_held = mine(Gauge, "tuneloop:engine_loras_held", "LoRA adapters held in memory.")
        self.loras_registered = mine(Gauge, "tuneloop:engine_loras_registered", "LoRA adapters registered.")
        self.lora_loads = mine(Gauge, "tuneloop:engine_lora_loads", "LoRA adapter reads from disk so far.")
        self.lora_evictions = mine(Gauge, "tuneloop:engine_lora_evictions", "LoRA adapters evicted (LRU) so far.")
        self._lora_info = Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                                ["running_lora_adapters", "waiting_lora_adapters", "max_lora"], registry=r)
        self._last_info: tuple[str, str, str] | None = None
        self._cache_info: Gauge | None = None

    def set_cache_config(self, block_size: int, num_blocks: int, kv_cache_memory_bytes: int,
                         prefix_caching: bool) -> None:
        """``vllm:cache_config_info``: vLLM's ``CacheConfig.metrics_info()`` labels that mean something here
        (the GPU-only ones, ``gpu_memory_utilization``, ``swap_space``, ``cpu_offload_gb``, ``mamba_*``, are
        left out), plus ``engine``."""
        info = {"block_size": str(block_size), "cache_dtype": "auto", "enable_prefix_caching": str(prefix_caching),
                "is_attention_free": "False", "kv_cache_memory_bytes": str(kv_cache_memory_bytes),
                "num_cpu_blocks": "None", "num_gpu_blocks": str(num_blocks), "num_gpu_blocks_override": "None",
                "sliding_window": "None", "engine": ENGINE}
        if self._cache_info is None:
            self._cache_info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                                     list(info), registry=self.registry)
        self._cache_info.clear()
        self._cache_info.labels(**info).set(1)

    def set_lora_info(self, running: set[str], waiting: set[str], max_lora: int) -> None:
        key = (",".join(sorted(running)), ",".join(sorted(waiting)), str(max_lora))
        if key != self._last_info:
            if self._last_info is not None:
                self._lora_info.remove(*self._last_info)
            self._last_info = key
        self._lora_info.labels(*key).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
