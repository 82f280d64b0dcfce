"""Wire types of vLLM's legacy Completions API (``POST /v1/completions``), as this engine reads them.

:class:`CompletionRequest` shares chat's sampling fields and bounds (``protocol_sampling.py``) and adds
the completion's own, as vLLM's ``CompletionRequest`` has them:

* ``prompt``: a string, a list of strings, a list of token ids or a list of lists of token ids (several
  prompts: up to ``VLLM_MAX_COMPLETION_PROMPTS``, 1024); empty -> 400.
* ``max_tokens`` defaults to 16 (OpenAI's default; vLLM reads null as 16).  ``echo`` with ``max_tokens``
  0 returns the prompt alone (vLLM generates one token and drops it).
* ``logprobs`` (an integer) and ``prompt_logprobs`` (vLLM's): 0 up to vLLM's ``max_logprobs``, 20 (OpenAI
  allows 5); -1 (the whole vocabulary) is beyond it, so a 400 too.  With ``echo``, ``prompt_logprobs``
  defaults to ``logprobs``, as in vLLM.  ``prompt_logprobs`` is refused with ``stream`` (vLLM's rule).
* ``suffix`` is a 400, as vLLM does not support it; ``best_of`` other than ``n`` is a 400 (this engine
  returns every choice it generates).
* ``add_special_tokens`` and ``truncation_side`` (``truncate_prompt_tokens`` keeps the last tokens, or the
  first with ``right``) are honoured.

Fields vLLM knows that this engine does not do are a 400 naming them (:data:`NOT_YET`); other unknown
fields are logged and ignored, as for chat.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, cast

from pydantic import field_validator

from adapters.engine.protocol_sampling import Int64, RequestError, SamplingRequest

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
MAX_PROMPTS = int(os.environ.get("VLLM_MAX_COMPLETION_PROMPTS", "1024"))
DEFAULT_MAX_TOKENS = 16

NOT_YET: dict[str, Callable[[Any], bool]] = {
    **{k: (lambda v: v is not None) for k in (
        "guided_regex", "guided_choice", "guided_grammar", "structured_outputs", "prompt_embeds",
        "allowed_token_ids", "logprob_token_ids", "repetition_detection")},
    **{k: bool for k in ("use_beam_search", "bad_words", "return_tokens_as_token_ids", "watermarking")},
    "priority": lambda v: v not in (None, 0),
}
NOT_YET_WHY = {
    "use_beam_search": "This engine does not do beam search.",
    "prompt_embeds": "This engine does not take prompt embeddings.",
    "priority": "Priority scheduling is not enabled on this engine: priority must be 0.",
}


class CompletionRequest(SamplingRequest):
    NOT_YET = NOT_YET
    NOT_YET_WHY = NOT_YET_WHY

    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    max_tokens: Int64 | None = DEFAULT_MAX_TOKENS
    logprobs: Int64 | None = None
    prompt_logprobs: Int64 | None = None
    suffix: str | None = None
    best_of: Int64 | None = None
    add_special_tokens: bool = True
    truncation_side: Literal["left", "right"] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, v: Any) -> Any:
        """vLLM's four shapes, with one error naming ``prompt`` for anything else."""
        if v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return v
        if isinstance(v, list) and (_ids(v) or all(isinstance(x, list) and _ids(x) for x in v)):
            return v
        raise ValueError("prompt must be a string, a list of strings, a list of token ids (integers from 0) or a "
                         "list of lists of token ids.")

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any) -> Any:
        return DEFAULT_MAX_TOKENS if v is None else v

    @property
    def echo_only(self) -> bool:
        """``echo`` with ``max_tokens`` 0: the prompt alone."""
        return self.echo and self.max_tokens == 0

    def requested_max(self) -> int | None:
        return 1 if self.echo_only else self.max_tokens

    def logprob_counts(self) -> tuple[int | None, int | None]:
        prompt = self.prompt_logprobs if self.prompt_logprobs is not None else self.logprobs if self.echo else None
        return self.logprobs, prompt

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        p = self.prompt
        if p is None or isinstance(p, str):
            return [p or ""]
        if not p or isinstance(p[0], int):
            return [cast("list[int]", p)]  # a list of ids is one prompt
        return [x for x in p]  # several prompts (strings or lists of ids)

    def _check_own(self) -> None:
        if self.prompt is None or self.prompt == "":
            raise RequestError("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        several = isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int)
        if several and len(self.prompt or ()) > MAX_PROMPTS:
            raise RequestError(f"prompt list length {len(self.prompt or ())} exceeds the maximum allowed count of "
                               f"{MAX_PROMPTS}.", "prompt")
        if self.suffix:
            raise RequestError("suffix is not currently supported (vLLM does not support it either: the models it "
                               "serves do no fill-in-the-middle).", "suffix")
        n = 1 if self.n is None else self.n
        if self.best_of is not None and self.best_of < n:
            raise RequestError(f"best_of must be greater than or equal to n, got n={n} and best_of={self.best_of}.",
                               "best_of")
        if self.best_of is not None and self.best_of > n:
            raise RequestError("This engine does not support best_of above n (it returns every choice it "
                               "generates).", "best_of")
        for name, k, kind in (("logprobs", self.logprobs, "sample"), ("prompt_logprobs", self.prompt_logprobs,
                                                                      "prompt")):
            if k is not None and k < -1:
                raise RequestError(f"`{name}` must be a positive value or -1.", name)
            if k is not None and not 0 <= k <= MAX_LOGPROBS:
                what = "the whole vocabulary" if k == -1 else str(k)
                raise RequestError(f"Requested {kind} logprobs of {what}, which is greater than max allowed: "
                                   f"{MAX_LOGPROBS}.", name)
        if self.stream and self.prompt_logprobs:
            raise RequestError("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")


def _ids(xs: list[Any]) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs)
