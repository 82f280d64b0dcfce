"""Continuous batching: the loop that owns the model and the KV cache.

One thread runs :meth:`Scheduler.run`.  Every iteration it

1. takes new requests and aborts from a thread-safe inbox;
2. admits waiting requests (``admission.py``): round-robin across tenants, while there are free rows
   (``max_batch``), room in the KV budget at every row's worst case, the tenant is under its running
   cap, and the batch stays within ``max_loras`` distinct adapters;
3. prefills the admitted sequences after copying the KV of their longest cached prefix (``prefix.py``),
   and samples their first token (``steps.py``);
4. runs one decode step for every running sequence, base model and adapters mixed
   (:class:`~adapters.engine.lora.LoraBatch`);
5. retires finished, aborted or failed sequences at once (their rows are compacted).

A failure inside a step fails only the requests whose rows caused it (``steps.py``).  If the loop dies
anyway, every request gets an error and ``on_death`` is called: the server then exits non-zero, so a
supervisor (``tuneloop serve``) restarts the engine instead of it answering 503 forever.

Tokens go back to the HTTP side through ``Request.sink``, a callable that the
server makes thread-safe with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters.engine.admission import SHARED_TENANT, FairQueue, KVBudget, Verdict
from adapters.engine.forward import BatchedLlama
from adapters.engine.lora import AdapterRegistry, LoraBatch, LoraWeights
from adapters.engine.metrics import EngineMetrics
from adapters.engine.prefix import PrefixCache
from adapters.engine.request_stats import RequestTiming
from adapters.engine.sampling import SamplingParams
from adapters.engine.sequence import Sequence
from adapters.engine.steps import Steps

log = logging.getLogger(__name__)

# Test-only fault injection (no request can kill the loop any more): "scheduler" makes the loop raise when
# it admits a request, to test that the engine then exits non-zero.
FAULT = os.environ.get("TUNELOOP_ENGINE_FAULT", "")


@dataclass
class Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    adapter: str | None
    sink: Callable[[dict[str, Any]], None]
    tenant: str = SHARED_TENANT
    arrival: float = field(default_factory=time.monotonic)
    seqs: list[Sequence] = field(default_factory=list)
    first_token_at: float | None = None
    aborted: bool = False
    failed: bool = False
    worst: int = 0  # positions one row may reach (KVBudget.worst)
    timing: RequestTiming = field(default_factory=RequestTiming)  # for the metrics (request_stats.py)


class Scheduler(Steps):
    def __init__(self, model: BatchedLlama, registry: AdapterRegistry, tokenizer: Any, metrics: EngineMetrics,
                 eos_ids: set[int], budget: KVBudget, max_batch: int = 32, max_loras: int = 8,
                 prefix_positions: int = 8192, fair: bool = True, max_running_per_tenant: int | None = None):
        self.model, self.registry, self.tok, self.metrics = model, registry, tokenizer, metrics
        self.eos_ids, self.budget = eos_ids, budget
        self.max_batch, self.max_loras = max_batch, max(1, max_loras)
        model.cache.limit_bytes = budget.usable
        self.prefix = PrefixCache(prefix_positions)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        cap = max(1, max_batch // 2) if max_running_per_tenant is None else max_running_per_tenant
        self.waiting = FairQueue(fair, cap if fair and cap > 0 else None)
        self.running: list[Sequence] = []  # index == KV-cache row
        self._lora: LoraBatch | None = None
        self._lora_dirty = True
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="engine-scheduler", daemon=True)
        self.dead: BaseException | None = None
        self.on_death: Callable[[BaseException], None] | None = None

    # -- called from other threads -------------------------------------------------
    def submit(self, req: Request) -> None:
        self.inbox.put(("add", req))

    def abort(self, req: Request) -> None:
        self.inbox.put(("abort", req))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(("wake", None))
        self.thread.join(timeout=10)

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:  # fail every request; the server exits non-zero (on_death)
            log.critical("scheduler crashed; the engine will exit", exc_info=True)
            self.dead = exc
            for req in list(self.waiting) + list({id(s.req): s.req for s in self.running}.values()):
                req.sink({"error": f"engine failure: {exc}", "status": 500})
            if self.on_death is not None:
                self.on_death(exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.running and not self.waiting)
            admitted = self._admit()
            if admitted:
                if FAULT == "scheduler":
                    raise RuntimeError("fault injected (TUNELOOP_ENGINE_FAULT=scheduler)")
                self._prefill(admitted)
            if self.running:
                self._decode()
            self._report()

    def _drain(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, req = item
            if kind == "add":
                self.waiting.append(req)
            elif kind == "abort":
                req.aborted = True
                if self.waiting.remove(req):
                    self._finish_request(req, aborted=True)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
        if any(s.req.aborted for s in self.running):
            self._retire([i for i, s in enumerate(self.running) if s.req.aborted])

    # -- admission -------------------------------------------------------------------
    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        adapters = {s.req.adapter for s in self.running if s.req.adapter}
        span = [max((s.req.worst for s in self.running), default=0)]
        running: dict[str, int] = {}
        for s in self.running:
            running[s.req.tenant] = running.get(s.req.tenant, 0) + 1

        def try_admit(req: Request) -> Verdict:
            n, rows = req.params.n, len(self.running)
            if rows + n > self.max_batch:
                return "stop"
            if req.adapter and req.adapter not in adapters and len(adapters) >= self.max_loras:
                return "skip"
            need = max(span[0], req.worst)
            if not self.budget.fits(rows + n, need):
                if rows == 0:  # can never fit (the HTTP layer refuses these; a defence)
                    self.waiting.remove(req)
                    req.sink({"error": self.budget.refusal(n, len(req.prompt), req.params.max_tokens), "status": 400})
                    return "skip"
                return "stop"
            weights: LoraWeights | None = None
            if req.adapter:
                try:
                    weights = self.registry.get(req.adapter)
                except Exception as exc:  # unloaded while it waited, or its folder vanished
                    self.waiting.remove(req)
                    req.sink({"error": f"The model `{req.adapter}` could not be loaded: {exc}", "status": 404})
                    return "skip"
                adapters.add(req.adapter)
            span[0] = need
            admitted.extend(self._start(req, weights))
            return "admit"

        self.waiting.select(try_admit, running)
        if admitted:
            self._lora_dirty = True
        return admitted

    def _start(self, req: Request, weights: LoraWeights | None) -> list[Sequence]:
        self.metrics.scheduled(req)
        for i in range(req.params.n):
            seq = Sequence(req, i, weights, self.tok, self.eos_ids, self.budget.max_model_len)
            seq.row = len(self.running)
            self.running.append(seq)
            req.seqs.append(seq)
        return req.seqs

    def _size_cache(self, positions: int) -> None:
        """Make the cache hold every running row up to ``positions``, keeping what rows hold (within budget)."""
        live = max((s.pos for s in self.running), default=0)
        self.model.cache.ensure(len(self.running), max(positions, live), live=live)

    # -- retiring --------------------------------------------------------------------
    def _retire(self, rows: list[int]) -> None:
        for r in sorted(set(rows), reverse=True):
            seq = self.running[r]
            last = len(self.running) - 1
            if r != last:
                self.model.cache.move_row(last, r)
                self.running[r] = self.running[last]
                self.running[r].row = r
            self.running.pop()
            req = seq.req
            if req.aborted or all(s.finish_reason for s in req.seqs):
                if not any(s.req is req for s in self.running):
                    self._finish_request(req, aborted=req.aborted)
        self._lora_dirty = True
        if not self.running and not self.waiting:
            self.model.cache.shrink()

    def _finish_request(self, req: Request, aborted: bool) -> None:
        self.metrics.finished(req)
        if req.failed:  # its error event was the last one
            return
        if aborted:
            self.metrics.aborted.inc()
        req.sink({"done": True, "aborted": aborted})

    def _report(self) -> None:
        m = self.metrics
        m.end_iteration()
        m.scheduler_state(len(self.running), sum(r.params.n for r in self.waiting))  # choices, as vLLM counts
        m.set_lora_info({s.req.adapter for s in self.running if s.req.adapter},
                        {r.adapter for r in self.waiting if r.adapter}, self.max_loras)
        m.loras_held.set(len(self.registry.held()))
        m.loras_registered.set(len(self.registry.names()))
        m.lora_loads.set(self.registry.loads)
        m.lora_evictions.set(self.registry.evictions)
        m.kv_usage.set(min(1.0, self.model.cache.nbytes / self.budget.limit_bytes))
        m.kv_bytes.set(self.model.cache.nbytes)
        m.kv_peak_bytes.set(self.model.cache.peak_bytes)
