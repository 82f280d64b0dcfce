"""Sampling parameters and the per-row sampler.

Each sequence owns a ``torch.Generator`` seeded from the request's ``seed``
(choice ``i`` uses ``seed + i``), so a seeded request gives the same output
whatever else is in the batch.  Greedy rows (``temperature == 0`` or
``top_k == 1``) take one batched ``argmax``; the others are sampled row by row
after vLLM's processing order: repetition / presence / frequency penalties,
temperature, top-k, top-p, min-p.

A row with a grammar (``structured.py``) draws only among the tokens it allows next;
``logit_bias`` is added to a row's logits before anything else.  :func:`logprobs`
gives the chosen token's log-probability and the top ones, from the model's raw
distribution (before bias, penalties and temperature: vLLM's default
``raw_logprobs``), for the rows that ask; :func:`prompt_logprobs` the same for a prompt's tokens.

A row's fault stays that row's: :func:`sample` returns a :class:`RowError`
in place of a token for a row whose logits are not finite or whose
distribution cannot be sampled, and the scheduler fails only that request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

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
    logprobs: int | None = None  # None: none; k: the chosen token's and the top k
    prompt_logprobs: int | None = None  # the same for every prompt token but the first (vLLM's extension)
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: Any = None  # structured.Grammar: each choice's tokens follow it
    return_token_ids: bool = False  # events carry the ids of their tokens
    skip_special_tokens: bool = True  # special tokens left out of the text

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1

    def generator(self, choice: int) -> torch.Generator | None:
        if self.greedy:
            return None
        g = torch.Generator()
        # torch takes a seed in [-2^63, 2^64); seed + choice wraps into it (the protocol bounds seed to int64)
        g.manual_seed(((self.seed + choice) & _U64) if self.seed is not None else random.getrandbits(63))
        return g


_U64 = (1 << 64) - 1


class RowError(Exception):
    """One row of a batch could not be sampled; the others were."""


Row = tuple[SamplingParams, "torch.Generator | None", list[int], list[int], Any]


def sample(logits: torch.Tensor, rows: list[Row]) -> list[int | RowError]:
    """Pick one token per row of ``logits[n, vocab]``, or a :class:`RowError` for a row that cannot be sampled.

    ``rows[i]`` is ``(params, generator, prompt_ids, output_ids, matcher)`` of row ``i`` (``matcher``: the
    choice's grammar state, or None).
    """
    out: list[int | RowError] = list(logits.argmax(dim=-1).tolist())
    bad = (~torch.isfinite(logits).all(dim=-1)).nonzero().flatten().tolist()
    for i in bad:  # NaN or inf from the forward: that row's output would be garbage
        out[i] = RowError("the model produced non-finite logits for this sequence")
    if all(_plain(r[0]) for r in rows):
        return out
    logits = logits.float().cpu()  # per-request CPU generators; a [batch, vocab] copy is cheap
    for i, (p, gen, prompt, output, matcher) in enumerate(rows):
        if _plain(p) or isinstance(out[i], RowError):
            continue
        try:
            row = logits[i].clone()
            if matcher is not None:  # tokens the grammar does not allow next can never be drawn
                allowed = p.grammar.allowed(matcher)
                if not bool(allowed.any()):
                    raise ValueError(f"the grammar allows no next token ({matcher.get_error() or 'stopped'})")
                row[~allowed] = float("-inf")
            out[i] = _one(row, p, gen, prompt, output)
        except (RuntimeError, ValueError, IndexError) as exc:
            out[i] = RowError(f"sampling failed: {exc}")
    return out


def logprobs(logits: torch.Tensor, asks: list[int | None], tokens: list[int | RowError]
             ) -> list[tuple[float, list[tuple[int, float]]] | None]:
    """Per row: (the chosen token's log-probability, the top ``k`` (id, log-probability)), or None."""
    out: list[tuple[float, list[tuple[int, float]]] | None] = [None] * len(asks)
    wanted = [i for i, k in enumerate(asks) if k is not None and not isinstance(tokens[i], RowError)]
    if not wanted:
        return out
    lp = torch.log_softmax(logits[wanted].float(), dim=-1).cpu()
    for j, i in enumerate(wanted):
        k, tok = asks[i], tokens[i]
        assert k is not None and isinstance(tok, int)
        top = torch.topk(lp[j], k) if k else None
        out[i] = (float(lp[j, tok]), list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else [])
    return out


def prompt_logprobs(logits: torch.Tensor, targets: list[int], k: int
                    ) -> list[tuple[int, float, int, list[tuple[int, float]]]]:
    """Per position ``t`` of ``logits[T, vocab]``: (``targets[t]``, its log-probability, its rank (1: the most
    likely), the top ``k`` (id, log-probability)), for ``len(targets)`` positions (vLLM's ``prompt_logprobs``)."""
    lp = torch.log_softmax(logits[: len(targets)].float(), dim=-1).cpu()
    ids = torch.tensor(targets, dtype=torch.long)
    chosen = lp[torch.arange(len(targets)), ids]
    ranks = (lp > chosen[:, None]).sum(dim=-1) + 1
    top = torch.topk(lp, k) if k else None
    return [(t, float(chosen[i]), int(ranks[i]),
             list(zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)) if top is not None else [])
            for i, t in enumerate(targets)]


def _plain(p: SamplingParams) -> bool:
    return p.greedy and p.repetition_penalty == 1.0 and not (p.presence_penalty or p.frequency_penalty) \
        and not p.logit_bias and p.grammar is None


def _one(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None, prompt: list[int],
         output: list[int]) -> int:
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias), dtype=torch.long)
        row[ids] += torch.tensor(list(p.logit_bias.values()), dtype=row.dtype)
    _penalize(row, p, prompt, output)
    # a value that overflowed float32 stays the largest one instead of turning the softmax into NaN
    row = torch.nan_to_num(row, nan=float("-inf"), posinf=torch.finfo(row.dtype).max)
    if p.greedy:
        return int(row.argmax())
    return _draw(row, p, gen)


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
    row = torch.nan_to_num(row, nan=float("-inf"), posinf=torch.finfo(row.dtype).max)
    probs = torch.softmax(row, dim=-1)
    if p.min_p > 0.0:
        probs[probs < p.min_p * probs.max()] = 0.0
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
        raise ValueError("no token has a finite, positive probability")
    return int(torch.multinomial(probs, 1, generator=gen))
