"""What vLLM's chat and completions requests share: the sampling fields, their bounds, and the
:class:`~adapters.engine.sampling.SamplingParams` they make (:class:`SamplingRequest`).

Requests allow extra fields (like vLLM's ``OpenAIBaseModel``): unknown ones are
logged and ignored, except the ones that ask for something this engine does not
do (each request type's ``NOT_YET``): those are a 400 naming the field, never a
reply that silently ignores them.  Validation failures become 400s in OpenAI's
envelope (``server.py``), never FastAPI's 422, naming the field in ``param``.
``logit_bias`` (token id -> [-100, 100]) is honoured as OpenAI defines it.

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
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from adapters.engine.sampling import SamplingParams

log = logging.getLogger(__name__)

MAX_STOP = 4
MAX_N = 16
LOGIT_BIAS_RANGE = (-100.0, 100.0)
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


class SamplingRequest(BaseModel):
    """What chat and completions requests share: vLLM's sampling fields, their bounds (:meth:`check`) and
    the :class:`SamplingParams` they make.  Subclasses add their own fields and ``_check_own``."""

    model_config = ConfigDict(extra="allow")
    # Fields that ask for what the engine cannot do: field -> does this value ask for it? (a 400 naming it)
    NOT_YET: ClassVar[dict[str, Callable[[Any], bool]]] = {}
    NOT_YET_WHY: ClassVar[dict[str, str]] = {}  # field -> the 400's message (default: "not supported yet")

    model: str | None = None
    temperature: Finite | None = None
    top_p: Finite | None = None
    max_tokens: Int64 | None = None
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
    request_id: str | None = Field(default=None)
    logit_bias: dict[str, Finite] | None = None
    # vLLM's: the prompt (chat: the last assistant message) prepended to the reply; the prompt cut to its
    # last k tokens (-1: the model's length); the token ids of prompt and reply in the response
    echo: bool = False
    truncate_prompt_tokens: Int64 | None = None
    return_token_ids: bool | None = False

    def requested_max(self) -> int | None:
        return self.max_tokens

    def max_param(self) -> str:
        return "max_tokens"

    def logprob_counts(self) -> tuple[int | None, int | None]:
        """(top logprobs per generated token, per prompt token); None: not asked."""
        return None, None

    def check(self) -> None:
        """Raise :class:`RequestError` (-> 400 naming the field) for values vLLM or OpenAI refuse."""
        mt = self.requested_max()
        if mt is not None and mt < 1:
            raise RequestError(f"max_tokens must be at least 1, got {mt}.", self.max_param())
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
        if self.stream_options is not None and not self.stream:
            raise RequestError("Stream options can only be defined when `stream=True`.", "stream_options")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < -1:
            raise RequestError(f"truncate_prompt_tokens must be -1 or at least 0, got {self.truncate_prompt_tokens}.",
                               "truncate_prompt_tokens")
        self._check_own()
        self._check_logit_bias()
        self._check_not_yet()
        if self.model_extra:
            log.debug("ignoring fields %s", sorted(self.model_extra))

    def _check_own(self) -> None:
        """The subclass's own fields."""

    def _check_logit_bias(self) -> None:
        lo, hi = LOGIT_BIAS_RANGE
        for key, value in (self.logit_bias or {}).items():
            if not key.strip().lstrip("-").isdigit():
                raise RequestError(f"logit_bias keys must be token ids, got {key[:32]!r}.", "logit_bias")
            if not lo <= value <= hi:
                raise RequestError(f"logit_bias values must be in [{lo:g}, {hi:g}], got {value}.", "logit_bias")

    def _check_not_yet(self) -> None:
        fields = self.model_extra or {}
        for name, asks in self.NOT_YET.items():
            if name in fields and asks(fields[name]):
                why = self.NOT_YET_WHY.get(name, f"This engine does not support `{name}` yet.")
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
        logprobs, prompt_logprobs = self.logprob_counts()
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
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            logit_bias={int(k): float(v) for k, v in (self.logit_bias or {}).items()},
            grammar=grammar,
            return_token_ids=bool(self.return_token_ids),
            skip_special_tokens=self.skip_special_tokens,
        )
