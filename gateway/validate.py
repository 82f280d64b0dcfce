"""The few checks the gateway makes before it forwards a chat request.

OpenAI answers a bad field with 400 ``invalid_request_error`` naming the ``param``; we do
the same for what routing and logging rely on and for the common range errors, and leave
everything else to the upstream (whose 4xx is passed through). Checks are plain Python on
the parsed dict: no pydantic model on the hot path.

**Storable** (``check_storable``, run on every parsed body): whatever passes can be both
forwarded and logged, so a 200 is never without its record and the gateway never fails
on the caller's input after the upstream was called (which would count against the
circuit breaker). orjson parses 1,024 levels of nesting but encodes only 254, and the log
wraps a body two levels deeper (a batch, a record); PostgreSQL's JSONB refuses
``\u0000``. So bodies nested deeper than ``MAX_DEPTH`` (the body object is level 1) and
strings with NUL are a 400. Cheap: counting ``[`` and ``{`` bytes skips the walk for
nearly every body, and ``\u0000`` is a byte search. Values the client sent are echoed
in messages clipped (``gateway.errors.clip``).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest, clip

MAX_DEPTH = 64  # far below orjson's 254 on encode, with room for the log's wrapping
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# name -> (low, high, integer?)
RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, False),
    "frequency_penalty": (-2.0, 2.0, False),
    "presence_penalty": (-2.0, 2.0, False),
    "n": (1, 128, True),
    "top_logprobs": (0, 20, True),
    "max_tokens": (1, 2**31 - 1, True),
    "max_completion_tokens": (1, 2**31 - 1, True),
}


def _bad(message: str, param: str | None, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _within(value: Any, levels: int) -> bool:
    """Nested at most ``levels`` deep (containers only count)."""
    if levels == 0:
        return False
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if (kind is dict or kind is list) and not _within(item, levels - 1):
            return False
    return True


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is str:
            if "\x00" in v:
                return True
        elif type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return False


def check_storable(raw: bytes, body: Any) -> None:
    """400 unless ``body`` (parsed from ``raw``) can be forwarded and logged (see above)."""
    if (type(body) is dict or type(body) is list) and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH \
            and not _within(body, MAX_DEPTH):
        raise _bad(f"The request body is nested too deeply: at most {MAX_DEPTH} levels of objects "
                   "and arrays are allowed.", None, "nesting_too_deep")
    if b"\\u0000" in raw and _has_nul(body):
        raise _bad("The request contains a NUL character (\\u0000), which cannot be stored.", None,
                   "invalid_value")


def check_number(name: str, value: Any, ranges: dict[str, tuple[float, float, bool]] = RANGES) -> None:
    low, high, integer = ranges[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not (isinstance(value, int) or value.is_integer())):
        kind = "an integer" if integer else "a number"
        raise _bad(f"Invalid type for '{name}': expected {kind}, but got {type(value).__name__}.",
                   name, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"Invalid '{name}': {clip(value)} is out of range; expected a value between {low} and {high}.",
                   name, "invalid_value")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise _bad("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not messages:
        raise _bad("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                   "messages", "empty_array")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad(f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]",
                       "invalid_type")
        role = msg.get("role")
        if role not in ROLES:
            raise _bad(f"Invalid value for 'messages[{i}].role': {clip(role)} is not one of "
                       f"{sorted(ROLES)}.", f"messages[{i}].role", "invalid_value")
        if "content" not in msg and role not in ("assistant",):
            raise _bad(f"Missing required parameter: 'messages[{i}].content'.",
                       f"messages[{i}].content", "missing_required_parameter")


def check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise _bad("Invalid 'metadata': expected an object with at most 16 keys.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise _bad("Invalid 'metadata': keys are strings of at most 64 characters and values "
                       "strings of at most 512.", "metadata")


def apply_key_limits(principal: Any, body: dict[str, Any], choices: int | None = None,
                     fields: tuple[str, ...] = ("max_completion_tokens", "max_tokens")) -> None:
    """A key's ``max_tokens`` caps the completion tokens of every request, all ``n`` choices together
    (or all ``choices``: a legacy completion's prompts × best_of): absent -> set to the cap // n, above -> 400.
    ``fields``: the request's limits (a Responses API body's ``max_output_tokens``); the last is set."""
    cap = principal.limits.get("max_tokens")
    if not cap:
        return
    n = choices or body.get("n") or 1
    for name in fields:
        asked = body.get(name)
        if asked is not None and asked * n > cap:
            raise _bad(f"Invalid '{name}': {asked}{f' x n={n}' if n > 1 else ''} is above this key's limit of "
                       f"{int(cap)} completion tokens per request.", name, "invalid_value")
    if all(body.get(name) is None for name in fields):
        if n > cap:
            raise _bad(f"Invalid 'n': {n} choices cannot fit this key's limit of {int(cap)} completion tokens.",
                       "n", "invalid_value")
        body[fields[-1]] = int(cap) // n


def validate_chat_request(body: Any, max_messages: int = 2048) -> None:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None)
    model = body.get("model")
    if model is None:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("Invalid type for 'model': expected a non-empty string.", "model", "invalid_type")
    if "messages" not in body:
        raise _bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    _check_messages(body["messages"])
    if len(body["messages"]) > max_messages:
        raise _bad(f"Invalid 'messages': at most {max_messages} messages are allowed.", "messages",
                   "array_above_max_length")
    for name in RANGES.keys() & body.keys():
        if body[name] is not None:
            check_number(name, body[name])
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise _bad("Invalid 'stop': expected a string or an array of at most 4 strings.", "stop")
    check_metadata(body.get("metadata"))
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or not stream):
        raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                   "stream_options")
