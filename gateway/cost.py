"""Cost of one request from the target's price table (USD per 1M tokens).

``prices`` in a target's config: ``input``, ``cached_input`` (defaults to ``input``) and
``output``; a target without them takes the config's ``default_prices`` (same keys), if any.
Cached prompt tokens are billed at the cached rate, the rest of the prompt at the input rate.
"""

from __future__ import annotations

from typing import Any


def request_cost(prices: dict[str, float], usage: dict[str, Any] | None) -> float | None:
    if not prices or not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    input_rate = prices.get("input", 0.0)
    cached_rate = prices.get("cached_input", input_rate)
    return ((prompt - cached) * input_rate + cached * cached_rate
            + completion * prices.get("output", 0.0)) / 1_000_000
