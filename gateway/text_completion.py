"""What is the legacy completions API's own (``POST /v1/completions``): its checks, the routes that
can honour a request, and the assembler of a streamed ``text_completion`` for the record.

**Checks** (OpenAI's ``CreateCompletionRequest``, a 400 ``invalid_request_error`` naming the
``param``, as chat's): ``model``; ``prompt`` a string, an array of strings, an array of token ids or
an array of token-id arrays (at most ``MAX_PROMPTS`` prompts; null is refused: not every target
takes it); the spec's ranges (``max_tokens`` ≥ 0, ``best_of`` 0-20, ``n`` 1-128...); ``best_of`` ≥
``n`` and not with ``stream``; ``echo``/``stream`` booleans, ``suffix`` a string, ``stop`` at most 4
strings, ``logit_bias`` an object, ``stream_options`` only with ``stream``, ``metadata`` as chat's
(it is logged). As on the chat path, fields OpenAI does not define are not refused: vLLM targets
get them (vLLM's extra sampling fields: ``top_k``...), OpenAI targets do not (the provider keeps
what the SDK's ``completions.create`` takes).

**logprobs** is an integer ≥ 0 everywhere, and its upper bound is the target's: OpenAI's is 5,
vLLM's is its server's ``--max-logprobs`` (20 by default), which the gateway cannot know. So a
request above 5 keeps only the plan's vLLM routes (like ``gateway.target_fields``: the routes that
can honour it), and is a 400 when the plan has none; a vLLM target that refuses a value answers its
own 400, which comes back in OpenAI's envelope. ``suffix``, ``echo``, ``best_of`` and
``logit_bias`` go to every target as sent; a target that does not take one answers 400 the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.assemble import ChunkAssembler
from gateway.errors import InvalidRequest, clip
from gateway.validate import check_metadata, check_number

if TYPE_CHECKING:  # the router brings every provider and the openai SDK: the log writer child needs none
    from gateway.router import Attempt

MAX_PROMPTS = 2048
OPENAI_MAX_LOGPROBS = 5
RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, False),
    "frequency_penalty": (-2.0, 2.0, False),
    "presence_penalty": (-2.0, 2.0, False),
    "n": (1, 128, True),
    "best_of": (0, 20, True),
    "logprobs": (0, 2**31 - 1, True),  # the upper bound is the target's (see above)
    "max_tokens": (0, 2**31 - 1, True),
    "seed": (-(2**63), 2**63 - 1, True),
}
KINDS = {"echo": bool, "stream": bool, "suffix": str, "user": str, "logit_bias": dict}
KIND_NAMES = {bool: "a boolean", str: "a string", dict: "an object"}


def _bad(message: str, param: str | None, code: str | None = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int and t >= 0 for t in value)


def check_prompt(prompt: Any) -> None:
    shapes = "a string, an array of strings, an array of token ids or an array of token-id arrays"
    if isinstance(prompt, str) or _is_ids(prompt):
        return
    if not isinstance(prompt, list):
        raise _bad(f"Invalid type for 'prompt': expected {shapes}.", "prompt", "invalid_type")
    if not prompt:
        raise _bad("Invalid 'prompt': empty array. Expected an array with minimum length 1.", "prompt", "empty_array")
    if len(prompt) > MAX_PROMPTS:
        raise _bad(f"Invalid 'prompt': at most {MAX_PROMPTS} prompts are allowed.", "prompt",
                   "array_above_max_length")
    if not (all(isinstance(p, str) for p in prompt) or all(_is_ids(p) for p in prompt)):
        raise _bad(f"Invalid 'prompt': expected {shapes} (token ids are integers ≥ 0).", "prompt", "invalid_type")


def _check_kinds(body: dict[str, Any]) -> None:
    for name, kind in KINDS.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise _bad(f"Invalid type for '{name}': expected {KIND_NAMES[kind]}.", name, "invalid_type")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise _bad("Invalid 'stop': expected a string or an array of at most 4 strings.", "stop")


def _check_best_of(body: dict[str, Any]) -> None:
    best_of = body.get("best_of")
    if best_of is None:
        return
    if best_of < (body.get("n") or 1):
        raise _bad(f"Invalid 'best_of': {clip(best_of)} must be greater than or equal to 'n'.", "best_of")
    if best_of > 1 and body.get("stream"):
        raise _bad("Invalid 'best_of': results cannot be streamed when 'best_of' is above 1.", "best_of")


def validate_completion_request(body: Any) -> None:
    """400 unless ``body`` is a legacy completion request the gateway can route and log."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None, None)
    model = body.get("model")
    if model is None:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("Invalid type for 'model': expected a non-empty string.", "model", "invalid_type")
    if body.get("prompt") is None:
        raise _bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    check_prompt(body["prompt"])
    for name in RANGES.keys() & body.keys():
        if body[name] is not None:
            check_number(name, body[name], RANGES)
    _check_kinds(body)
    _check_best_of(body)
    check_metadata(body.get("metadata"))
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or not body.get("stream")):
        raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                   "stream_options", None)


def text_routes(plan: list[Attempt], body: dict[str, Any]) -> list[Attempt]:
    """The routes of ``plan`` that can honour ``logprobs`` (see above; 400 when none can)."""
    logprobs = body.get("logprobs")
    if logprobs is None or logprobs <= OPENAI_MAX_LOGPROBS:
        return plan
    kept = [attempt for attempt in plan if attempt.provider.kind == "vllm"]
    if kept:
        return kept
    raise _bad(f"Invalid 'logprobs': {clip(logprobs)} is above the maximum of {OPENAI_MAX_LOGPROBS} of this "
               f"model's targets (OpenAI's limit; vLLM targets take up to their server's --max-logprobs).",
               "logprobs")


class _Choice:
    __slots__ = ("text", "finish_reason", "logprobs")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None


class TextAssembler(ChunkAssembler):
    """The whole ``text_completion`` from a stream's chunks (``text_completion`` objects too): per
    choice the text, the finish reason and the logprobs' lists joined; the final usage; and ``deltas``,
    how many chunks carried text (one per generated token on vLLM and the engine)."""

    def new_choice(self) -> _Choice:
        return _Choice()

    def add_choice(self, choice: _Choice, ch: dict[str, Any]) -> None:
        if ch.get("text"):
            choice.text.append(ch["text"])
            self.deltas += 1
        if isinstance(ch.get("logprobs"), dict):
            self._join_logprobs(choice, ch["logprobs"])
        if ch.get("finish_reason"):
            choice.finish_reason = ch["finish_reason"]

    @staticmethod
    def _join_logprobs(choice: _Choice, logprobs: dict[str, Any]) -> None:
        joined = choice.logprobs = choice.logprobs or {}
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            if isinstance(logprobs.get(key), list):
                joined.setdefault(key, []).extend(logprobs[key])

    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if 0 in self.choices else None

    def completion(self, gateway_id: str, created: int) -> dict[str, Any]:
        choices = [{"index": i, "text": "".join(c.text), "finish_reason": c.finish_reason, "logprobs": c.logprobs}
                   for i, c in sorted(self.choices.items())]
        out: dict[str, Any] = {"id": gateway_id, "object": "text_completion", "created": self.created or created,
                               "model": self.model, "choices": choices, "usage": self.usage}
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        return out
