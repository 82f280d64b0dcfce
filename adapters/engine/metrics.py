"""Prometheus metrics under vLLM's names (label ``model_name``), in a registry per engine.

vLLM's ``vllm:lora_requests_info`` is a gauge whose value is a timestamp and
whose labels carry the running and waiting adapters (comma-separated) and
``max_lora``; it is reproduced here, with ``tuneloop:engine_loras_held`` and
LoRA load / eviction counters added.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LAT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


class EngineMetrics:
    def __init__(self, model_name: str):
        self.registry = r = CollectorRegistry()
        lab = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch.", lab,
                             registry=r).labels(model_name)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", lab,
                             registry=r).labels(model_name)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).", lab,
                              registry=r).labels(model_name)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", lab,
                              buckets=_LAT, registry=r).labels(model_name)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", lab,
                             buckets=_LAT, registry=r).labels(model_name)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefilled prompt tokens.", lab,
                                     registry=r).labels(model_name)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", lab,
                                         registry=r).labels(model_name)
        self.aborted = Counter("tuneloop:engine_aborted_requests", "Requests aborted (client gone).", lab,
                               registry=r).labels(model_name)
        self.failed = Counter("tuneloop:engine_failed_requests", "Requests failed inside a step (the others "
                              "went on).", lab, registry=r).labels(model_name)
        self.kv_bytes = Gauge("tuneloop:engine_kv_cache_bytes", "Bytes the KV cache holds now.", lab,
                              registry=r).labels(model_name)
        self.kv_peak_bytes = Gauge("tuneloop:engine_kv_cache_peak_bytes", "The most bytes the KV cache has held "
                                   "(resizes included); never above the budget.", lab, registry=r).labels(model_name)
        self.loras_held = Gauge("tuneloop:engine_loras_held", "LoRA adapters held in memory.", lab,
                                registry=r).labels(model_name)
        self.loras_registered = Gauge("tuneloop:engine_loras_registered", "LoRA adapters registered.", lab,
                                      registry=r).labels(model_name)
        self.lora_loads = Gauge("tuneloop:engine_lora_loads", "LoRA adapter reads from disk so far.", lab,
                                registry=r).labels(model_name)
        self.lora_evictions = Gauge("tuneloop:engine_lora_evictions", "LoRA adapters evicted (LRU) so far.",
                                    lab, registry=r).labels(model_name)
        self._lora_info = Gauge("vllm:lora_requests_info", "Running stats on LoRA requests.",
                                ["running_lora_adapters", "waiting_lora_adapters", "max_lora"], registry=r)
        self._last_info: tuple[str, str, str] | None = None

    def set_lora_info(self, running: set[str], waiting: set[str], max_lora: int) -> None:
        key = (",".join(sorted(running)), ",".join(sorted(waiting)), str(max_lora))
        if key != self._last_info:
            if self._last_info is not None:
                self._lora_info.remove(*self._last_info)
            self._last_info = key
        self._lora_info.labels(*key).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
