"""Wire types of vLLM's OpenAI-compatible chat API, as this engine reads and writes them.

Requests allow extra fields (like vLLM's ``OpenAIBaseModel``): unknown ones are
logged and ignored, except the ones that ask for something this engine does not
do (grammars other than JSON schemas, beam search, prompt logprobs): those are a
400 naming the field (``NOT_YET``), never a reply that silently ignores them.
``response_format`` and ``guided_json`` are honoured by constrained decoding
(``structured.py``), ``tools`` and ``tool_choice`` by ``tools.py``.
Validation failures become 400s in OpenAI's envelope (``server.py``), never
FastAPI's 422, naming the field in ``param``.  ``logprobs`` /
``top_logprobs`` (0-20) and ``logit_bias`` (token id -> [-100, 100]) are
honoured as OpenAI defines them (logprobs of the model's raw distribution, like
vLLM's default ``raw_logprobs``).

Bounds and types are vLLM's (``SamplingParams._verify_args`` and its protocol
models, same wording): ``seed`` within int64, floats finite (``allow_inf_nan``
off, so ``"nan"`` strings that pydantic would coerce are refused too), penalties
in range.  One bound is ours: ``repetition_penalty`` within [1e-30, 1e30]
(vLLM accepts any finite positive value; below about 1e-36 the penalized
logits overflow float32 and the sampler gets NaN, which is what took the
scheduler down).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.engine.sampling import SamplingParams

log = logging.getLogger(__name__)

MAX_STOP = 4
MAX_N = 16
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
LOGIT_BIAS_RANGE = (-100.0, 100.0)
# Fields that ask for what the engine cannot do: field -> does this value ask for it?
NOT_YET: dict[str, Callable[[Any], bool]] = {
    **{k: (lambda v: v is not None) for k in ("guided_regex", "guided_choice", "guided_grammar",
                                              "structured_outputs", "prompt_logprobs")},
    "use_beam_search": bool,
    "best_of": lambda v: v not in (None, 1),
}
NOT_YET_WHY = {
    "use_beam_search": "This engine does not do beam search.",
    "best_of": "This engine does not support best_of above 1.",
}
INT64 = (-(1 << 63), (1 << 63) - 1)  # vLLM: seed within torch.iinfo(torch.long)
REPETITION_PENALTY_RANGE = (1e-30, 1e30)

Finite = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]


class RequestError(ValueError):
    """A value vLLM or OpenAI refuse: a 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# Sampling defaults for fields a request leaves out, as vLLM takes them from the model's
# generation config: SmolLM2's model card recommends temperature 0.2 and top_p 0.9 (its
# GGUF carries no generation config; at 1.0 this small model often rambles). Override with
# TUNELOOP_ENGINE_TEMPERATURE / TUNELOOP_ENGINE_TOP_P.
DEFAULT_TEMPERATURE = float(os.environ.get("TUNELOOP_ENGINE_TEMPERATURE", "0.2"))
DEFAULT_TOP_P = float(os.environ.get("TUNELOOP_ENGINE_TOP_P", "0.9"))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]]
    temperature: Finite | None = None
    top_p: Finite | None = None
    max_tokens: Int64 | None = None
    max_completion_tokens: Int64 | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    n: Int64 | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Finite | None = 0.0
    frequency_penalty: Finite | None = 0.0
    user: str | None = None
    # vLLM's extra sampling parameters
    top_k: Int64 | None = None
    min_p: Finite | None = None
    repetition_penalty: Finite | None = None
    min_tokens: Int64 = 0
    stop_token_ids: list[Int64] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    request_id: str | None = Field(default=None)
    logprobs: bool | None = False
    top_logprobs: Int64 | None = None
    logit_bias: dict[str, Finite] | None = None
    # vLLM's: the last message prepended to the reply when it is the assistant's; the prompt cut to its
    # last k tokens (-1: the model's length); the token ids of prompt and reply in the response
    echo: bool = False
    truncate_prompt_tokens: Int64 | None = None
    return_token_ids: bool | None = False

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("messages must contain at least one message")
        return v

    def requested_max(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def check(self) -> None:
        """Raise :class:`RequestError` (-> 400 naming the field) for values vLLM or OpenAI refuse."""
        mt = self.requested_max()
        max_name = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        if mt is not None and mt < 1:
            raise RequestError(f"max_tokens must be at least 1, got {mt}.", max_name)
        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be in [0, 2], got {self.temperature}.", "temperature")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}.", "top_p")
        if self.top_k is not None and self.top_k < -1:
            raise RequestError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.", "top_k")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise RequestError(f"min_p must be in [0, 1], got {self.min_p}.", "min_p")
        self._check_penalties()
        n = 1 if self.n is None else self.n
        if not 1 <= n <= MAX_N:
            raise RequestError(f"n must be between 1 and {MAX_N}, got {n}.", "n")
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP:
            raise RequestError(f"stop may hold at most {MAX_STOP} sequences.", "stop")
        if self.min_tokens < 0:
            raise RequestError(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.",
                               "min_tokens")
        if mt is not None and self.min_tokens > mt:
            raise RequestError(f"min_tokens must be less than or equal to max_tokens={mt}, got {self.min_tokens}.",
                               "min_tokens")
        if self.continue_final_message and self.add_generation_prompt:
            raise RequestError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                               "continue_final_message")
        if self.stream_options is not None and not self.stream:
            raise RequestError("Stream options can only be defined when `stream=True`.", "stream_options")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < -1:
            raise RequestError(f"truncate_prompt_tokens must be -1 or at least 0, got {self.truncate_prompt_tokens}.",
                               "truncate_prompt_tokens")
        self._check_logprobs()
        self._check_not_yet()
        if self.model_extra:
            log.debug("ignoring fields %s", sorted(self.model_extra))

    def _check_logprobs(self) -> None:
        if self.top_logprobs is not None:
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}.",
                                   "top_logprobs")
            if self.top_logprobs > 0 and not self.logprobs:
                raise RequestError("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
        lo, hi = LOGIT_BIAS_RANGE
        for key, value in (self.logit_bias or {}).items():
            if not key.strip().lstrip("-").isdigit():
                raise RequestError(f"logit_bias keys must be token ids, got {key[:32]!r}.", "logit_bias")
            if not lo <= value <= hi:
                raise RequestError(f"logit_bias values must be in [{lo:g}, {hi:g}], got {value}.", "logit_bias")

    def _check_not_yet(self) -> None:
        fields = self.model_extra or {}
        for name, asks in NOT_YET.items():
            if name in fields and asks(fields[name]):
                why = NOT_YET_WHY.get(name, f"This engine does not support `{name}` yet.")
                raise RequestError(why, name)

    def check_vocab(self, vocab: int) -> None:
        """``logit_bias`` keys name tokens of the model's vocabulary (vLLM's check)."""
        for key in self.logit_bias or {}:
            if not 0 <= int(key) < vocab:
                raise RequestError(f"token_id {int(key)} in logit_bias contains out-of-vocab token id "
                                   f"(vocabulary size {vocab}).", "logit_bias")

    def _check_penalties(self) -> None:
        rp = self.repetition_penalty
        if rp is not None:
            if rp <= 0.0:
                raise RequestError(f"repetition_penalty must be greater than zero, got {rp}.", "repetition_penalty")
            lo, hi = REPETITION_PENALTY_RANGE
            if not lo <= rp <= hi:
                raise RequestError(f"repetition_penalty must be in [{lo:g}, {hi:g}] (beyond, the penalized logits "
                                   f"overflow float32), got {rp}.", "repetition_penalty")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if v is not None and not -2.0 <= v <= 2.0:
                raise RequestError(f"{name} must be in [-2, 2], got {v}.", name)

    def sampling(self, default_max: int, grammar: Any = None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        mt = self.requested_max()
        return SamplingParams(
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=DEFAULT_TOP_P if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            min_p=self.min_p or 0.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            max_tokens=mt if mt is not None else default_max,
            min_tokens=self.min_tokens,
            n=1 if self.n is None else self.n,
            seed=self.seed,
            stop=[s for s in stop if s],
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            include_stop_str_in_output=self.include_stop_str_in_output,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            logit_bias={int(k): float(v) for k, v in (self.logit_bias or {}).items()},
            grammar=grammar,
            return_token_ids=bool(self.return_token_ids),
        )


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten content parts (``[{"type": "text", "text": ...}]``) to strings for the chat template."""
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError("each message needs a 'role'")
        c = m.get("content")
        if isinstance(c, list):
            c = "".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
        out.append({**m, "content": c if c is not None else ""})
    return out


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """``cached_tokens`` None: no ``prompt_tokens_details`` (vLLM sends it with --enable-prompt-tokens-details)."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


def last_text(messages: list[dict[str, Any]]) -> str:
    """What ``echo`` prepends: the final message's text when it is the assistant's (vLLM's rule)."""
    last = messages[-1] if messages else {}
    return str(last.get("content") or "") if last.get("role") == "assistant" else ""


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(cid: str, model: str, created: int, choices: list[dict[str, Any]],
                    prompt_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    completion = sum(c.pop("_tokens") for c in choices)
    return {"id": cid, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": usage(prompt_tokens, completion, cached_tokens), "system_fingerprint": None, "service_tier": None}


def choice(index: int, text: str | None, finish_reason: str | None, tokens: int,
           logprobs: list[dict[str, Any]] | None = None, tool_calls: list[dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None,
                                        "tool_calls": tool_calls or []},
            "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
            "finish_reason": finish_reason, "stop_reason": None, "_tokens": tokens}


def chunk(cid: str, model: str, created: int, choices: list[dict[str, Any]],
          usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def delta(index: int, content: str | None = None, role: str | None = None,
          finish_reason: str | None = None, logprobs: list[dict[str, Any]] | None = None,
          tool_calls: list[dict[str, Any]] | None = None,
          call_deltas: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``tool_calls``: whole calls (indexed here); ``call_deltas``: parts that carry their own ``index``."""
    d: dict[str, Any] = {}
    if role:
        d["role"] = role
    if content is not None:
        d["content"] = content
    if tool_calls:
        d["tool_calls"] = [{"index": k, **call} for k, call in enumerate(tool_calls)]
    if call_deltas:
        d["tool_calls"] = call_deltas
    lp = None if logprobs is None else {"content": logprobs, "refusal": None}
    return {"index": index, "delta": d, "logprobs": lp, "finish_reason": finish_reason}


def model_card(id_: str, created: int, root: str, parent: str | None, max_model_len: int) -> dict[str, Any]:
    return {"id": id_, "object": "model", "created": created, "owned_by": "vllm", "root": root,
            "parent": parent, "max_model_len": max_model_len, "permission": []}


def now() -> int:
    return int(time.time())
