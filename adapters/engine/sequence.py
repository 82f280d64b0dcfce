"""One generated choice: its tokens, incremental detokenization and stop checks.

Detokenization is incremental (the prefix/read-offset method of vLLM and TGI):
only the last few tokens are decoded per step, and text ending in an
incomplete UTF-8 sequence (``\\ufffd``) is held back until it completes.  With
stop strings, the last ``max(len(stop)) - 1`` characters are held back too, so
a stream never shows the start of a stop string that then completes.

With a grammar (``response_format``), the choice ends with ``stop`` as soon as its value
is complete.  With ``logprobs`` asked, each token's entry (OpenAI's ``{"token", "logprob", "bytes",
"top_logprobs"}``) waits with its text and leaves with the delta that carries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.engine.lora import LoraWeights
    from adapters.engine.scheduler import Request


class Sequence:
    def __init__(self, req: Request, index: int, weights: LoraWeights | None, tokenizer: Any,
                 eos_ids: set[int], max_len: int):
        self.req, self.index, self.weights, self.tok = req, index, weights, tokenizer
        p = req.params
        self.generator = p.generator(index)
        self.eos_ids = set() if p.ignore_eos else set(eos_ids)
        self.stop_ids = set(p.stop_token_ids) | self.eos_ids
        self.max_total = max_len
        self.output: list[int] = []
        self.row = -1
        self.pos = 0  # tokens in the KV cache
        self.cached = 0  # prompt tokens taken from the prefix cache
        self.prefix_keys: list[tuple[int, int]] = []
        self.text = ""
        self.sent = 0  # characters of ``text`` already emitted
        self.ids_sent = 0  # tokens of ``output`` already emitted (return_token_ids)
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None  # vLLM's: the stop string or stop token id (not EOS) hit
        self._prefix = 0
        self._read = 0
        self._hold = max((len(s) for s in p.stop), default=1) - 1
        self._logprobs: list[dict[str, Any]] | None = [] if p.logprobs is not None else None
        self.matcher = p.grammar.matcher() if p.grammar is not None else None  # structured outputs

    def add_logprob(self, tok: int, logprob: float, top: list[tuple[int, float]]) -> None:
        if self._logprobs is not None:
            self._logprobs.append({**self._entry(tok, logprob), "top_logprobs": [self._entry(t, v) for t, v in top]})

    def take_ids(self) -> list[int] | None:
        """The ids of the tokens not yet sent (None when the request did not ask)."""
        if not self.req.params.return_token_ids:
            return None
        out, self.ids_sent = self.output[self.ids_sent:], len(self.output)
        return out

    def take_logprobs(self) -> list[dict[str, Any]] | None:
        """The entries of the tokens not yet sent (None when the request did not ask)."""
        if self._logprobs is None:
            return None
        out, self._logprobs = self._logprobs, []
        return out

    def _entry(self, tok: int, logprob: float) -> dict[str, Any]:
        text = self.tok.decode([tok], skip_special_tokens=False)
        return {"token": text, "logprob": max(logprob, -9999.0), "bytes": list(text.encode("utf-8"))}

    def append(self, tok: int) -> str | None:
        """Add a sampled token; return newly emittable text (or None) and set ``finish_reason``."""
        p = self.req.params
        self.output.append(tok)
        if tok in self.stop_ids and len(self.output) > p.min_tokens:
            self.finish_reason, self.stop_reason = "stop", None if tok in self.eos_ids else tok
            return self._flush()
        self._detok()
        if self.matcher is not None and self.matcher.is_stopped():  # the value is complete: nothing may follow
            self.finish_reason = "stop"
            return self._flush()
        if p.stop and len(self.output) > p.min_tokens:
            start = max(0, self.sent - self._hold)
            hits = [(i, s) for s in p.stop if (i := self.text.find(s, start)) >= 0]
            if hits:
                i, s = min(hits)
                self.text = self.text[: i + len(s)] if p.include_stop_str_in_output else self.text[:i]
                self.finish_reason, self.stop_reason = "stop", s
                return self._flush()
        if len(self.output) >= p.max_tokens or len(self.req.prompt) + len(self.output) >= self.max_total:
            self.finish_reason = "length"
            return self._flush()
        upto = len(self.text) - self._hold if p.stop else len(self.text)
        if upto <= self.sent:
            return None
        out = self.text[self.sent : upto]
        self.sent = upto
        return out

    def _flush(self) -> str:
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out

    def _detok(self) -> None:
        ids = self.output
        if self.stop_ids and ids and ids[-1] in self.stop_ids:
            return
        skip = self.req.params.skip_special_tokens
        prefix = self.tok.decode(ids[self._prefix : self._read], skip_special_tokens=skip)
        full = self.tok.decode(ids[self._prefix :], skip_special_tokens=skip)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self._prefix = self._read
            self._read = len(ids)
