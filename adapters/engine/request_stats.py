"""What the scheduler tells the metrics, and how it becomes vLLM's series (``metrics.py`` defines them).

The scheduler thread calls, in a request's life: :meth:`Recorder.scheduled` when it is admitted,
:meth:`Recorder.prefix_lookup` and :meth:`Recorder.prefilled` for each choice it prefills,
:meth:`Recorder.token` for each token a choice samples, :meth:`Recorder.finished` when the request ends
(every choice done, aborted or failed), and :meth:`Recorder.end_iteration` once per loop iteration.

As in vLLM v1 (``vllm/v1/metrics/stats.py``), the unit of the per-request series is an engine request,
which for a request with ``n`` > 1 is one choice (vLLM fans such a request out into ``n`` child requests):
the timestamps below are kept per choice, and only ``request_params_n`` and
``request_max_num_generation_tokens`` are observed once per client request.  Intervals, as vLLM computes
them: queue = arrival -> admitted, prefill = admitted -> first token, decode = first -> last token,
inference = admitted -> last token, time per output token = decode / (tokens - 1).  A choice that ended
before it was admitted observes none of them, one admitted but without a token observes the queue time
only, and one with a single token no time per output token (vLLM's ``RequestTiming`` cases).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    from adapters.engine.scheduler import Request
    from adapters.engine.sequence import Sequence


@dataclass
class RequestTiming:
    """Monotonic stamps of one request: when it was admitted, and per choice its first and last token."""

    scheduled: float | None = None
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)


class Recorder:
    """Mixed into :class:`~adapters.engine.metrics.EngineMetrics`, which creates the series declared here."""

    running: Gauge
    waiting: Gauge
    prompt_tokens: Counter
    prompt_by_source: dict[str, Counter]
    prompt_cached: Counter
    prompt_recomputed: Counter
    generation_tokens: Counter
    prefix_queries: Counter
    prefix_hits: Counter
    success: dict[str, Counter]
    iteration_tokens: Histogram
    ttft: Histogram
    itl: Histogram
    tpot: Histogram
    e2e: Histogram
    queue_time: Histogram
    prefill_time: Histogram
    decode_time: Histogram
    inference_time: Histogram
    request_prompt_tokens: Histogram
    request_generation_tokens: Histogram
    request_kv_computed: Histogram
    request_max_tokens: Histogram
    request_n: Histogram
    request_max_generation: Histogram
    _iteration: int = 0  # tokens prefilled and sampled in the current loop iteration

    def scheduler_state(self, running_choices: int, waiting_choices: int) -> None:
        self.running.set(running_choices)
        self.waiting.set(waiting_choices)

    def scheduled(self, req: Request) -> None:
        if req.timing.scheduled is None:
            req.timing.scheduled = time.monotonic()

    def prefix_lookup(self, queried: int, hit: int) -> None:
        """One choice's prompt looked up in the prefix cache: ``queried`` tokens, ``hit`` of them cached."""
        self.prefix_queries.inc(queried)
        self.prefix_hits.inc(hit)

    def prefilled(self, seqs: list[Sequence]) -> None:
        """Choices whose prompts were just prefilled (``Sequence.cached`` tokens came from the prefix cache).

        The prefix cache never holds a prompt's last token (``prefix.block_hashes``), so no cached token is
        ever recomputed: ``prompt_tokens_recomputed`` stays 0."""
        for s in seqs:
            total, cached = len(s.req.prompt), s.cached
            self.prompt_tokens.inc(total)
            self.prompt_by_source["local_compute"].inc(total - cached)
            self.prompt_by_source["local_cache_hit"].inc(cached)
            self.prompt_cached.inc(cached)
            self._iteration += total

    def token(self, s: Sequence, now: float) -> None:
        """A choice sampled a token at ``now``: its first (TTFT) or one more (inter-token latency)."""
        t, i = s.req.timing, s.index
        if i in t.first:
            self.itl.observe(now - t.last[i])
        else:
            t.first[i] = now
            self.ttft.observe(now - s.req.arrival)
        t.last[i] = now
        self.generation_tokens.inc()
        self._iteration += 1

    def finished(self, req: Request) -> None:
        """The request ended: each choice's reason (its own, else ``error`` or ``abort``) and intervals."""
        now, t, p = time.monotonic(), req.timing, req.params
        most = 0
        for i in range(p.n):
            seq = req.seqs[i] if i < len(req.seqs) else None  # none: aborted before it was admitted
            generated = len(seq.output) if seq is not None else 0
            most = max(most, generated)
            reason = seq.finish_reason if seq is not None and seq.finish_reason else (
                "error" if req.failed else "abort")
            self.success[reason].inc()
            self.e2e.observe(now - req.arrival)
            self.request_prompt_tokens.observe(len(req.prompt))
            self.request_generation_tokens.observe(generated)
            if seq is not None and i in t.first:
                self.request_kv_computed.observe(len(req.prompt) - seq.cached)
            if p.max_tokens:
                self.request_max_tokens.observe(p.max_tokens)
            if t.scheduled is None:
                continue
            self.queue_time.observe(t.scheduled - req.arrival)
            if i not in t.first:
                continue
            first, last = t.first[i], t.last[i]
            self.prefill_time.observe(first - t.scheduled)
            self.decode_time.observe(last - first)
            self.inference_time.observe(last - t.scheduled)
            if generated > 1:
                self.tpot.observe((last - first) / (generated - 1))
        self.request_n.observe(p.n)
        self.request_max_generation.observe(most)

    def end_iteration(self) -> None:
        """vLLM's ``iteration_tokens_total``: tokens of one engine step (prompts prefilled + tokens sampled)."""
        if self._iteration:
            self.iteration_tokens.observe(self._iteration)
            self._iteration = 0
