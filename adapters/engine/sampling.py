"""Sampling parameters and the per-row sampler.

Each sequence owns a ``torch.Generator`` seeded from the request's ``seed``
(choice ``i`` uses ``seed + i``), so a seeded request gives the same output
whatever else is in the batch.  Greedy rows (``temperature == 0`` or
``top_k == 1``) take one batched ``argmax``; the others are sampled row by row
after vLLM's processing order: repetition / presence / frequency penalties,
temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 16
    min_tokens: int = 0
    n: int = 1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1

    def generator(self, choice: int) -> torch.Generator | None:
        if self.greedy:
            return None
        g = torch.Generator()
        g.manual_seed((self.seed + choice) if self.seed is not None else random.getrandbits(63))
        return g


def sample(logits: torch.Tensor, rows: list[tuple[SamplingParams, torch.Generator | None, list[int], list[int]]]
           ) -> list[int]:
    """Pick one token per row of ``logits[n, vocab]``.

    ``rows[i]`` is ``(params, generator, prompt_ids, output_ids)`` of row ``i``.
    """
    out = logits.argmax(dim=-1).tolist()
    if all(p.greedy and p.repetition_penalty == 1.0 and not (p.presence_penalty or p.frequency_penalty)
           for p, *_ in rows):
        return out
    logits = logits.float().cpu()  # per-request CPU generators; a [batch, vocab] copy is cheap
    for i, (p, gen, prompt, output) in enumerate(rows):
        if p.greedy and p.repetition_penalty == 1.0 and not (p.presence_penalty or p.frequency_penalty):
            continue
        row = logits[i].float().clone()
        _penalize(row, p, prompt, output)
        if p.greedy:
            out[i] = int(row.argmax())
            continue
        out[i] = _draw(row, p, gen)
    return out


def _penalize(row: torch.Tensor, p: SamplingParams, prompt: list[int], output: list[int]) -> None:
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt) | set(output)), dtype=torch.long)
        if seen.numel():
            vals = row[seen]
            row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and output:
        ids, counts = torch.tensor(output, dtype=torch.long).unique(return_counts=True)
        row[ids] -= p.frequency_penalty * counts.to(row.dtype) + p.presence_penalty


def _draw(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    row = row / p.temperature
    if p.top_k and p.top_k > 0 and p.top_k < row.numel():
        kth = torch.topk(row, p.top_k).values[-1]
        row[row < kth] = float("-inf")
    if p.top_p < 1.0:
        srt, idx = torch.sort(row, descending=True)
        probs = torch.softmax(srt, dim=-1)
        cum = probs.cumsum(-1)
        drop = (cum - probs) > p.top_p  # keep the smallest prefix whose mass reaches top_p
        srt[drop] = float("-inf")
        row = torch.full_like(row, float("-inf")).scatter(0, idx, srt)
    probs = torch.softmax(row, dim=-1)
    if p.min_p > 0.0:
        probs[probs < p.min_p * probs.max()] = 0.0
    return int(torch.multinomial(probs, 1, generator=gen))
