"""The Chat Completions fields OpenAI added in 2025-2026, by what each kind of target does with them.

``openai`` targets get every one of them as sent (the SDK takes them all; OpenAI itself refuses a
value its model cannot honour). ``vllm`` targets (vLLM, and ``tuneloop engine``, which reads
requests as vLLM does) get the body untouched too, but vLLM only knows ``reasoning_effort`` and
ignores the others with a warning, so the gateway decides here, per field, before any upstream
is called:

    field                   on a vllm target
    prompt_cache_key        forwarded: a caching hint; vLLM's automatic prefix cache serves repeats
    safety_identifier       forwarded (at most 64 characters): an identifier, like ``user``, logged
    reasoning_effort        forwarded: vLLM's own field (the chat template of a reasoning model uses
                            it; vLLM answers 400 for a value it does not know)
    service_tier            auto / default; flex, scale, priority, fast -> 400 (one tier)
    verbosity               medium (the default); low / high -> 400
    prompt_cache_retention  in_memory; 24h -> 400 (the prefix cache evicts, it keeps nothing 24 h)
    prompt_cache_options    {} or mode implicit; ttl (a minimum lifetime) or mode explicit -> 400
    moderation              -> 400 (no moderation model runs beside vLLM)
    web_search_options      -> 400 (no web search)

A null value counts as absent. An alias whose plan mixes kinds (canary arms, fallbacks) keeps
only the routes that can honour the request; when none can, the 400 names the field of the
first route's refusal. OpenAI's envelope: ``unsupported_value`` (or ``unsupported_parameter``
when no value would do), ``param`` the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest, clip
from gateway.router import Attempt

Check = Callable[[str, Any], InvalidRequest | None]


def _string(max_len: int | None = None) -> Check:
    def check(name: str, value: Any) -> InvalidRequest | None:
        if not isinstance(value, str):
            return InvalidRequest(f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type")
        if max_len is not None and len(value) > max_len:
            return InvalidRequest(f"Invalid '{name}': string too long. Expected a string with maximum length "
                                  f"{max_len}, but got a string with length {len(value)}.", param=name,
                                  code="string_above_max_length")
        return None
    return check


def _one_of(allowed: tuple[Any, ...], why: str) -> Check:
    def check(name: str, value: Any) -> InvalidRequest | None:
        if value in allowed:
            return None
        shown = clip(repr(value)) if isinstance(value, str) else clip(value)
        return InvalidRequest(f"Unsupported value: '{name}' does not support {shown} on a vLLM target ({why}); "
                              f"use {' or '.join(map(repr, allowed))}, or leave it out.",
                              param=name, code="unsupported_value")
    return check


def _never(why: str) -> Check:
    def check(name: str, _value: Any) -> InvalidRequest | None:
        return InvalidRequest(f"Unsupported parameter: '{name}' cannot be honoured by a vLLM target ({why}).",
                              param=name, code="unsupported_parameter")
    return check


def _forwarded(_name: str, _value: Any) -> InvalidRequest | None:
    return None


def _cache_options(name: str, value: Any) -> InvalidRequest | None:
    if isinstance(value, dict) and value.get("ttl") is None and value.get("mode") in (None, "implicit"):
        return None
    return _one_of(({}, {"mode": "implicit"}), "its prefix cache is implicit and evicts entries when it needs "
                   "room, so it promises no minimum lifetime")(name, value)


VLLM: dict[str, Check] = {
    "prompt_cache_key": _string(),
    "safety_identifier": _string(64),
    "reasoning_effort": _forwarded,
    "service_tier": _one_of(("auto", "default"), "it has one service tier"),
    "verbosity": _one_of(("medium",), "it has no verbosity control"),
    "prompt_cache_retention": _one_of(("in_memory",), "its prefix cache is in memory and evicts entries"),
    "prompt_cache_options": _cache_options,
    "moderation": _never("no moderation model runs beside vLLM"),
    "web_search_options": _never("it has no web search"),
}
FIELDS = frozenset(VLLM)


def _refusal(attempt: Attempt, body: dict[str, Any], names: list[str]) -> InvalidRequest | None:
    if attempt.provider.kind != "vllm":
        return None
    for name in names:
        refused = VLLM[name](name, body[name])
        if refused is not None:
            return refused
    return None


def honouring(plan: list[Attempt], body: dict[str, Any]) -> list[Attempt]:
    """The routes of ``plan`` that can honour ``body``'s newer fields (400 when none can)."""
    if FIELDS.isdisjoint(body):  # nearly every request: one pass over its keys
        return plan
    names = sorted(name for name in FIELDS & body.keys() if body[name] is not None)
    if not names:
        return plan
    refusals = [_refusal(attempt, body, names) for attempt in plan]
    kept = [attempt for attempt, refused in zip(plan, refusals, strict=True) if refused is None]
    if kept:
        return kept
    first = refusals[0]
    assert first is not None
    raise first
