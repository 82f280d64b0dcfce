"""Wire types of vLLM's OpenAI-compatible chat API, as this engine reads and writes them.

The sampling fields, their bounds and the unknown-field rule are shared with the completions API
(``protocol_sampling.py``).  What this engine does not do for chat (grammars other than JSON
schemas, beam search, prompt logprobs) is a 400 naming the field (``NOT_YET``).
``response_format`` and ``guided_json`` are honoured by constrained decoding
(``structured.py``), ``tools`` and ``tool_choice`` by ``tools.py``.  ``logprobs`` /
``top_logprobs`` (0-20) are honoured as OpenAI defines them (logprobs of the model's raw
distribution, like vLLM's default ``raw_logprobs``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import field_validator

from adapters.engine.protocol_sampling import DEFAULT_TEMPERATURE as DEFAULT_TEMPERATURE
from adapters.engine.protocol_sampling import DEFAULT_TOP_P as DEFAULT_TOP_P
from adapters.engine.protocol_sampling import Int64, SamplingRequest
from adapters.engine.protocol_sampling import RequestError as RequestError
from adapters.engine.protocol_sampling import StreamOptions as StreamOptions

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # OpenAI's bound
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


class ChatCompletionRequest(SamplingRequest):
    NOT_YET = NOT_YET
    NOT_YET_WHY = NOT_YET_WHY

    messages: list[dict[str, Any]]
    max_completion_tokens: Int64 | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: bool | None = False
    top_logprobs: Int64 | None = None

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("messages must contain at least one message")
        return v

    def requested_max(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def logprob_counts(self) -> tuple[int | None, int | None]:
        return (self.top_logprobs or 0) if self.logprobs else None, None

    def _check_own(self) -> None:
        if self.continue_final_message and self.add_generation_prompt:
            raise RequestError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                               "continue_final_message")
        if self.top_logprobs is not None:
            if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
                raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}.",
                                   "top_logprobs")
            if self.top_logprobs > 0 and not self.logprobs:
                raise RequestError("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")


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
