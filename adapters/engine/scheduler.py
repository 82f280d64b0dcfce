"""Continuous batching: the loop that owns the model and the KV cache.

One thread runs :meth:`Scheduler.run`.  Every iteration it

1. takes new requests and aborts from a thread-safe inbox;
2. admits waiting requests, FIFO, while there are free rows (``max_batch``),
   room in the KV budget, and the batch stays within ``max_loras`` distinct
   adapters (a request whose adapter does not fit waits; later ones may pass);
3. prefills the admitted sequences (right-padded, batched up to
   ``PREFILL_TOKENS`` padded tokens, longer prompts in chunks) after copying
   the KV of their longest cached prefix (``prefix.py``), and samples their
   first token;
4. runs one decode step for every running sequence, base model and adapters
   mixed (:class:`~adapters.engine.lora.LoraBatch`);
5. retires finished or aborted sequences at once (their rows are compacted).

Tokens go back to the HTTP side through ``Request.sink``, a callable that the
server makes thread-safe with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters.engine.forward import ROUND, BatchedLlama
from adapters.engine.lora import AdapterRegistry, LoraBatch, LoraWeights
from adapters.engine.metrics import EngineMetrics
from adapters.engine.prefix import BLOCK, PrefixCache, block_hashes
from adapters.engine.sampling import SamplingParams, sample
from adapters.engine.sequence import Sequence

log = logging.getLogger(__name__)

PREFILL_TOKENS = 2048
PREFILL_CHUNK = 512


@dataclass
class Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    adapter: str | None
    sink: Callable[[dict[str, Any]], None]
    arrival: float = field(default_factory=time.monotonic)
    seqs: list[Sequence] = field(default_factory=list)
    first_token_at: float | None = None
    aborted: bool = False


class Scheduler:
    def __init__(self, model: BatchedLlama, registry: AdapterRegistry, tokenizer: Any, metrics: EngineMetrics,
                 eos_ids: set[int], max_batch: int = 32, max_loras: int = 8, kv_cache_bytes: int = 4 << 30,
                 prefix_positions: int = 8192):
        self.model, self.registry, self.tok, self.metrics = model, registry, tokenizer, metrics
        self.eos_ids = eos_ids
        self.max_batch, self.max_loras, self.kv_cache_bytes = max_batch, max(1, max_loras), kv_cache_bytes
        self.prefix = PrefixCache(prefix_positions)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.waiting: deque[Request] = deque()
        self.running: list[Sequence] = []  # index == KV-cache row
        self._lora: LoraBatch | None = None
        self._lora_dirty = True
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="engine-scheduler", daemon=True)
        self.dead: BaseException | None = None

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
        except BaseException as exc:  # the engine is dead: fail every request, /health says 503
            log.exception("scheduler crashed")
            self.dead = exc
            for req in list(self.waiting) + list({id(s.req): s.req for s in self.running}.values()):
                req.sink({"error": f"engine failure: {exc}"})
            raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.running and not self.waiting)
            admitted = self._admit()
            if admitted:
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
                if req in self.waiting:
                    self.waiting.remove(req)
                    self._finish_request(req, aborted=True)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
        if any(s.req.aborted for s in self.running):
            self._retire([i for i, s in enumerate(self.running) if s.req.aborted])

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        adapters = {s.req.adapter for s in self.running if s.req.adapter}
        span = max((s.pos for s in self.running), default=0)
        passed: list[Request] = []
        while self.waiting:
            req = self.waiting.popleft()
            n = req.params.n
            if len(self.running) + n > self.max_batch:
                passed.append(req)
                break
            if req.adapter and req.adapter not in adapters and len(adapters) >= self.max_loras:
                passed.append(req)
                continue
            need = max(span, len(req.prompt) + min(req.params.max_tokens, 256))
            rows = len(self.running) + n
            if self.running and rows * _round(need) * self.model.cache.bytes_per_position() > self.kv_cache_bytes:
                passed.append(req)
                break
            weights: LoraWeights | None = None
            if req.adapter:
                try:
                    weights = self.registry.get(req.adapter)
                except Exception as exc:  # unloaded while it waited, or its folder vanished
                    req.sink({"error": f"The model `{req.adapter}` could not be loaded: {exc}", "status": 404})
                    continue
                adapters.add(req.adapter)
            span = need
            for i in range(n):
                seq = Sequence(req, i, weights, self.tok, self.eos_ids, self.model.max_len)
                seq.row = len(self.running)
                self.running.append(seq)
                req.seqs.append(seq)
                admitted.append(seq)
        self.waiting.extendleft(reversed(passed))
        if admitted:
            self._lora_dirty = True
        return admitted

    def _prefill(self, seqs: list[Sequence]) -> None:
        todo = {id(s): self._reuse_prefix(s) for s in seqs}  # id -> tokens still to prefill
        groups: list[list[Sequence]] = []
        for s in seqs:
            g = groups[-1] if groups else None
            longest = max((len(todo[id(x)]) for x in g), default=0) if g else 0
            if g and (len(g) + 1) * max(longest, len(todo[id(s)])) <= PREFILL_TOKENS:
                g.append(s)
            else:
                groups.append([s])
        done: list[int] = []
        for g in groups:
            lora = self._lora_for([s.weights for s in g])
            if len(g) == 1 and len(todo[id(g[0])]) > PREFILL_CHUNK:
                logits = self._prefill_chunked(g[0], todo[id(g[0])], lora)
            else:
                T = max(len(todo[id(s)]) for s in g)
                toks = torch.zeros(len(g), T, dtype=torch.long)
                for i, s in enumerate(g):
                    toks[i, : len(todo[id(s)])] = torch.tensor(todo[id(s)])
                last = torch.tensor([len(todo[id(s)]) - 1 for s in g])
                start = torch.tensor([s.cached for s in g])
                logits = self.model.forward(toks, start, g[0].row, lora, last)
            for s in g:
                s.pos = len(s.req.prompt)
                self._store_prefix(s)
            self.metrics.prompt_tokens.inc(sum(len(s.req.prompt) for s in g if s.index == 0))
            done += self._accept(g, logits)
        if done:  # only now: retiring compacts rows, and later groups rely on theirs
            self._retire(done)

    def _reuse_prefix(self, s: Sequence) -> list[int]:
        """Copy the longest cached prefix into the sequence's row; return the tokens left to prefill."""
        s.prefix_keys = block_hashes(s.weights.id if s.weights else 0, s.req.prompt)
        k, entry = self.prefix.lookup(s.prefix_keys)
        s.cached = k
        if entry is not None:
            self.model.cache.ensure(len(self.running), k)
            self.model.cache.data[:, :, s.row, :, :k] = entry.kv[:, :, :, :k]
        return s.req.prompt[k:]

    def _store_prefix(self, s: Sequence) -> None:
        keys = s.prefix_keys
        if keys and s.cached < len(keys) * BLOCK:
            self.prefix.insert(keys, self.model.cache.data[:, :, s.row, :, : len(keys) * BLOCK].clone())

    def _prefill_chunked(self, s: Sequence, todo: list[int], lora: LoraBatch | None) -> torch.Tensor:
        prompt = torch.tensor(todo)
        logits = None
        for c in range(0, len(prompt), PREFILL_CHUNK):
            chunk = prompt[c : c + PREFILL_CHUNK][None]
            logits = self.model.forward(chunk, torch.tensor([s.cached + c]), s.row, lora)
        assert logits is not None
        return logits

    def _decode(self) -> None:
        if self._lora_dirty:
            self._lora = self._lora_for([s.weights for s in self.running])
            self._lora_dirty = False
        toks = torch.tensor([[s.output[-1]] for s in self.running])
        start = torch.tensor([s.pos for s in self.running])
        logits = self.model.forward(toks, start, 0, self._lora)
        for s in self.running:
            s.pos += 1
        done = self._accept(self.running, logits)
        if done:
            self._retire(done)

    def _lora_for(self, weights: list[LoraWeights | None]) -> LoraBatch | None:
        if all(w is None for w in weights):
            return None
        return LoraBatch(weights, self.model.dtype, self.model.device)

    def _accept(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Sample, emit, and return the rows that finished."""
        rows = [(s.req.params, s.generator, s.req.prompt, s.output) for s in seqs]
        now = time.monotonic()
        done: list[int] = []
        for s, tok in zip(seqs, sample(logits, rows), strict=True):
            req = s.req
            delta = s.append(tok)
            if req.first_token_at is None:
                req.first_token_at = now
                self.metrics.ttft.observe(now - req.arrival)
            self.metrics.generation_tokens.inc()
            if delta is not None or s.finish_reason:
                req.sink({"index": s.index, "text": delta or "", "finish_reason": s.finish_reason,
                          "completion_tokens": len(s.output), "cached_tokens": req.seqs[0].cached})
            if s.finish_reason:
                done.append(s.row)
        return done

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
        self.metrics.e2e.observe(time.monotonic() - req.arrival)
        if aborted:
            self.metrics.aborted.inc()
        req.sink({"done": True, "aborted": aborted})

    def _report(self) -> None:
        m = self.metrics
        m.running.set(len({id(s.req) for s in self.running}))
        m.waiting.set(len(self.waiting))
        m.set_lora_info({s.req.adapter for s in self.running if s.req.adapter},
                        {r.adapter for r in self.waiting if r.adapter}, self.max_loras)
        m.loras_held.set(len(self.registry.held()))
        m.loras_registered.set(len(self.registry.names()))
        m.lora_loads.set(self.registry.loads)
        m.lora_evictions.set(self.registry.evictions)
        m.kv_usage.set(min(1.0, self.model.cache.data.numel() * self.model.cache.data.element_size()
                           / self.kv_cache_bytes))


def _round(n: int) -> int:
    return -(-n // ROUND) * ROUND
