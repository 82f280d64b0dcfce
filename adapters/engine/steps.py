"""The scheduler's model steps: prefill and decode, each with its faults kept to the rows that caused them.

* Prefill runs admitted sequences in right-padded groups of up to ``PREFILL_TOKENS`` padded tokens (a long
  prompt alone, in ``PREFILL_CHUNK`` chunks) after copying the KV of their longest cached prefix.  A group
  is only formed while its padding stays within its longest prompt, so no row writes past the positions its
  request reserved (or past the context length).
* A request that asks for prompt logprobs has its first choice prefilled alone, in ``SCORE_CHUNK`` chunks
  whose every position's logits are read (none of its prompt comes from the prefix cache, as in vLLM);
  its request gets them as one ``prompt_logprobs`` event before its first token.
* Decode runs one token for every running sequence, base model and adapters mixed.
* A forward that raises for a whole batch is retried row by row; a row that fails alone fails its request
  (an ``error`` event, status 500), the others go on.  A row the sampler cannot sample
  (:class:`~adapters.engine.sampling.RowError`) fails its request the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from adapters.engine.forward import BatchedLlama, KVBudgetExceeded
from adapters.engine.lora import LoraBatch, LoraWeights
from adapters.engine.prefix import BLOCK, PrefixCache, block_hashes
from adapters.engine.sampling import RowError, logprobs, prompt_logprobs, sample

if TYPE_CHECKING:
    from adapters.engine.metrics import EngineMetrics
    from adapters.engine.scheduler import Request
    from adapters.engine.sequence import Sequence

log = logging.getLogger(__name__)

PREFILL_TOKENS = 2048
PREFILL_CHUNK = 512
SCORE_CHUNK = 128  # prompt logprobs: a chunk's [T, vocab] logits are held at once


class Steps:
    """Mixed into :class:`~adapters.engine.scheduler.Scheduler` (it owns ``running``, the model and caches)."""

    # What the steps use of the Scheduler, declared for the type checker (the Scheduler sets and defines them).
    model: BatchedLlama
    metrics: EngineMetrics
    prefix: PrefixCache
    running: list[Sequence]
    _lora: LoraBatch | None
    _lora_dirty: bool
    if TYPE_CHECKING:
        def _size_cache(self, positions: int) -> None: ...
        def _retire(self, rows: list[int]) -> None: ...

    def _prefill(self, seqs: list[Sequence]) -> None:
        try:
            self._size_cache(max(len(s.req.prompt) for s in seqs))
        except KVBudgetExceeded as exc:  # admission should have prevented it: fail what was just admitted
            log.error("KV cache: %s", exc)
            for s in seqs:
                self._fail(s.req, f"engine failure in this request: {exc}")
            self._retire(self._failed_rows())
            return
        todo = {id(s): self._reuse_prefix(s) for s in seqs}  # id -> tokens still to prefill
        done: list[int] = []
        for g in _groups(seqs, todo):
            results = self._guarded(g, lambda part: self._prefill_group(part, todo))
            ok = [(s, row) for s, row in results if row is not None]
            for s, _ in ok:
                s.pos = len(s.req.prompt)
                self._store_prefix(s)
            self.metrics.prefilled([s for s, _ in ok])
            if ok:
                done += self._accept([s for s, _ in ok], torch.stack([row for _, row in ok]))
        self._retire(done + self._failed_rows())  # only now: retiring compacts rows, later groups rely on theirs

    def _prefill_group(self, g: list[Sequence], todo: dict[int, list[int]]) -> torch.Tensor:
        lora = self._lora_for([s.weights for s in g])
        if len(g) == 1 and (len(todo[id(g[0])]) > PREFILL_CHUNK or _scores(g[0])):
            return self._prefill_chunked(g[0], todo[id(g[0])], lora)
        T = max(len(todo[id(s)]) for s in g)
        toks = torch.zeros(len(g), T, dtype=torch.long)
        for i, s in enumerate(g):
            toks[i, : len(todo[id(s)])] = torch.tensor(todo[id(s)])
        last = torch.tensor([len(todo[id(s)]) - 1 for s in g])
        start = torch.tensor([s.cached for s in g])
        return self.model.forward(toks, start, g[0].row, lora, last)

    def _prefill_chunked(self, s: Sequence, todo: list[int], lora: LoraBatch | None) -> torch.Tensor:
        """One sequence in chunks; with prompt logprobs (``_scores``), every position's logits are read."""
        scores, k = _scores(s), s.req.params.prompt_logprobs or 0
        size = SCORE_CHUNK if scores else PREFILL_CHUNK
        prompt = torch.tensor(todo)
        entries: list[tuple[int, float, int, list[tuple[int, float]]]] = []
        logits = None
        for c in range(0, len(prompt), size):
            chunk = prompt[c : c + size][None]
            logits = self.model.forward(chunk, torch.tensor([s.cached + c]), s.row, lora, every=scores)
            if scores:  # position t predicts token t + 1
                entries += prompt_logprobs(logits[0], todo[c + 1 : c + 1 + chunk.shape[1]], k)
                logits = logits[:, -1]
        assert logits is not None
        if scores:
            s.req.sink({"prompt_logprobs": entries})
        return logits

    def _reuse_prefix(self, s: Sequence) -> list[int]:
        """Copy the longest cached prefix into the sequence's row; return the tokens left to prefill."""
        s.prefix_keys = block_hashes(s.weights.id if s.weights else 0, s.req.prompt)
        if _scores(s):  # every prompt position's logits are needed: prefill it all (it is still cached after)
            return s.req.prompt
        k, entry = self.prefix.lookup(s.prefix_keys)
        s.cached = k
        self.metrics.prefix_lookup(len(s.req.prompt), k)
        if entry is not None:
            self.model.cache.write(s.row, entry.kv, k)
        return s.req.prompt[k:]

    def _store_prefix(self, s: Sequence) -> None:
        keys = s.prefix_keys
        if keys and s.cached < len(keys) * BLOCK:
            self.prefix.insert(keys, self.model.cache.read(s.row, len(keys) * BLOCK))

    def _decode(self) -> None:
        self._size_cache(max(s.pos for s in self.running) + 1)
        if self._lora_dirty:
            self._lora = self._lora_for([s.weights for s in self.running])
            self._lora_dirty = False
        seqs = list(self.running)

        def step(part: list[Sequence]) -> torch.Tensor:
            lora = self._lora if len(part) == len(seqs) else self._lora_for([s.weights for s in part])
            toks = torch.tensor([[s.output[-1]] for s in part])
            return self.model.forward(toks, torch.tensor([s.pos for s in part]), part[0].row, lora)

        ok = [(s, row) for s, row in self._guarded(seqs, step) if row is not None]
        for s, _ in ok:
            s.pos += 1
        done = self._accept([s for s, _ in ok], torch.stack([row for _, row in ok])) if ok else []
        self._retire(done + self._failed_rows())

    def _guarded(self, seqs: list[Sequence], run: Callable[[list[Sequence]], torch.Tensor]
                 ) -> list[tuple[Sequence, torch.Tensor | None]]:
        """``run(seqs)`` (contiguous rows) -> logits; on an error, each row alone; a row failing alone fails."""
        try:
            logits = run(seqs)
            return list(zip(seqs, logits, strict=True))
        except Exception as exc:
            if len(seqs) == 1:
                self._fail(seqs[0].req, f"engine failure in this request: {exc}")
                log.exception("forward failed for request %s", seqs[0].req.id)
                return [(seqs[0], None)]
            log.warning("forward failed for a batch of %d rows (%s); retrying row by row", len(seqs), exc)
        return [pair for s in seqs for pair in self._guarded([s], run)]

    def _lora_for(self, weights: list[LoraWeights | None]) -> LoraBatch | None:
        if all(w is None for w in weights):
            return None
        return LoraBatch(weights, self.model.dtype, self.model.device)

    def _accept(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Sample, emit, and return the rows that finished."""
        rows = [(s.req.params, s.generator, s.req.prompt, s.output, s.matcher) for s in seqs]
        now = time.monotonic()
        done: list[int] = []
        tokens = sample(logits, rows)
        probs = logprobs(logits, [s.req.params.logprobs for s in seqs], tokens)
        for s, tok, lp in zip(seqs, tokens, probs, strict=True):
            req = s.req
            if req.failed:
                continue
            if isinstance(tok, RowError):
                self._fail(req, f"engine failure in this request: {tok}")
                continue
            if s.matcher is not None and not s.matcher.consume_token(tok):
                self._fail(req, f"engine failure in this request: the grammar refused token {tok} "
                                f"({s.matcher.get_error()})")
                continue
            if lp is not None:
                s.add_logprob(tok, *lp)
            delta = s.append(tok)
            if req.first_token_at is None:
                req.first_token_at = now
            self.metrics.token(s, now)
            if delta is not None or s.finish_reason:
                req.sink({"index": s.index, "text": delta or "", "finish_reason": s.finish_reason,
                          "stop_reason": s.stop_reason, "completion_tokens": len(s.output),
                          "cached_tokens": req.seqs[0].cached, "logprobs": s.take_logprobs(),
                          "token_ids": s.take_ids()})
            if s.finish_reason:
                done.append(s.row)
        return done

    def _fail(self, req: Request, message: str) -> None:
        """Fail one request (its rows are retired by the caller through :meth:`_failed_rows`)."""
        if req.failed:
            return
        req.failed = req.aborted = True
        req.sink({"error": message, "status": 500})
        self.metrics.failed.inc()

    def _failed_rows(self) -> list[int]:
        return [s.row for s in self.running if s.req.failed]


def _groups(seqs: list[Sequence], todo: dict[int, list[int]]) -> list[list[Sequence]]:
    """Prefill groups: padded size within ``PREFILL_TOKENS``, padding never past the longest prompt."""
    groups: list[list[Sequence]] = []
    for s in seqs:
        g = groups[-1] if groups else None
        if g is not None and not _scores(g[0]) and not _scores(s):
            members = g + [s]
            longest = max(len(todo[id(x)]) for x in members)
            reach = max(x.cached for x in members) + longest
            if len(members) * longest <= PREFILL_TOKENS and reach <= max(len(x.req.prompt) for x in members):
                g.append(s)
                continue
        groups.append([s])
    return groups


def _scores(s: Sequence) -> bool:
    """Whether ``s`` prefills for its request's prompt logprobs (its first choice does, alone)."""
    return s.index == 0 and s.req.params.prompt_logprobs is not None
