"""What a request may consume at most (reserved at admission) and what it used (settled after).

**Prompt estimate** (no tokenizer on the hot path): the UTF-8 bytes of every string in the
messages (contents, text parts, names, tool calls' arguments) and in ``tools``, divided by 3,
plus 4 tokens per message and 3 for the reply's priming; an image, audio or file part counts
1,000 tokens. Byte-level BPE tokenizers average about 4 bytes per token on English prose and
about 3 on code, so this errs high for most text (a false 429 near the limit, never an
overrun); settling replaces the estimate with the upstream's count.

**Legacy completions** (``text=True``): the prompt's strings count like message text (bytes / 3),
token ids one each, every prompt of a batch plus the ``suffix``, 3 tokens of priming per prompt; and
the request generates ``max(n, best_of)`` completions for each prompt (``text_generations``).

**Responses** (``responses=True``, the Responses API passed through): ``instructions``, every
string of the ``input`` items and of ``tools`` count like message text, 4 tokens per item, 3 of
priming; the completion is ``max_output_tokens`` (set as ``max_tokens`` is below when absent).

**Completion**: ``max_completion_tokens`` or ``max_tokens`` (the larger if both), times ``n``. A key with a tpm or
USD budget whose request sets neither gets ``max_tokens`` = the key's ``max_tokens`` or
``DEFAULT_MAX_TOKENS`` (written into the request, as a key's ``max_tokens`` cap already is),
so that the reservation bounds what the upstream may produce.

**Price**: the dearest input and output rates among the plan's targets (a fallback may
serve the request); a target without ``prices`` takes the config's ``default_prices``. A key
with a USD budget calling a plan with an unpriced target and no ``default_prices`` gets 403:
its budget could not be enforced there.
"""

from __future__ import annotations

from typing import Any

from gateway.auth import Principal
from gateway.errors import PermissionDenied
from gateway.ratelimit import Ask, Reservation

DEFAULT_MAX_TOKENS = 1024
BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING = 3
MEDIA_PART_TOKENS = 1000
LEASE_SLACK_S = 60.0
USD_LIMITS = ("usd_per_day", "usd_per_month")
MEDIA_TYPES = ("image_url", "input_audio", "file")


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of the strings in a message-like value (media parts count as 0 here).
    Iterative: a body may nest ~1,000 deep (orjson's limit), past Python's recursion limit."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v.encode())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict) and v.get("type") not in MEDIA_TYPES:
            stack.extend(x for k, x in v.items() if k not in ("role", "type"))
    return total


def _media_parts(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") in MEDIA_TYPES)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    text = _text_bytes(messages) + _text_bytes(body.get("tools") or [])
    media = sum(_media_parts(m.get("content")) for m in messages if isinstance(m, dict))
    return (-(-text // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING
            + MEDIA_PART_TOKENS * media)


def estimate_responses_prompt_tokens(body: dict[str, Any]) -> int:
    items = body.get("input")
    items = [items] if isinstance(items, str) else items or []
    text = _text_bytes(items) + _text_bytes(body.get("instructions") or "") + _text_bytes(body.get("tools") or [])
    media = sum(_media_parts(i.get("content")) for i in items if isinstance(i, dict))
    return (-(-text // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * len(items) + REPLY_PRIMING
            + MEDIA_PART_TOKENS * media)


def prompts_of(body: dict[str, Any]) -> list[Any]:
    """A legacy completion's prompts: a string or a token-id list is one, a list of either is a batch."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        return prompt
    return [prompt]


def estimate_text_prompt_tokens(body: dict[str, Any]) -> int:
    prompts = prompts_of(body)
    ids = sum(len(p) for p in prompts if isinstance(p, list))
    text = _text_bytes([p for p in prompts if isinstance(p, str)]) + _text_bytes(body.get("suffix") or "")
    return -(-text // BYTES_PER_TOKEN) + ids + REPLY_PRIMING * len(prompts)


def text_generations(body: dict[str, Any]) -> int:
    """The completions a legacy request generates: ``max(n, best_of)`` per prompt."""
    return len(prompts_of(body)) * max(int(body.get("n") or 1), int(body.get("best_of") or 1))


CHAT_MAX = ("max_completion_tokens", "max_tokens")
RESPONSES_MAX = ("max_output_tokens",)


def completion_budget(p: Principal, body: dict[str, Any], generations: int | None = None,
                      fields: tuple[str, ...] = CHAT_MAX) -> int:
    """max_tokens × n (or ``generations``); sets max_tokens (the last of ``fields``) when the request
    leaves every one of ``fields`` out."""
    given = [v for v in (body.get(name) for name in fields) if v is not None]
    asked = max(given) if given else None  # both given: whichever the upstream honours
    if asked is None:
        asked = int(p.limits.get("max_tokens") or DEFAULT_MAX_TOKENS)
        body[fields[-1]] = asked
    return int(asked) * (generations or int(body.get("n") or 1))


def plan_prices(plan: list[Any], default: dict[str, float]) -> tuple[list[str], float, float]:
    """(unpriced targets, dearest input rate, dearest output rate), rates in USD per token."""
    unpriced, input_rate, output_rate = [], 0.0, 0.0
    for attempt in plan:
        prices = attempt.provider.cfg.prices or default
        if not prices:
            unpriced.append(attempt.target)
            continue
        input_rate = max(input_rate, prices.get("input", 0.0), prices.get("cached_input", 0.0))
        output_rate = max(output_rate, prices.get("output", 0.0))
    return unpriced, input_rate / 1e6, output_rate / 1e6


def ask_for(p: Principal, body: dict[str, Any], plan: list[Any], default_prices: dict[str, float],
            text: bool = False, responses: bool = False) -> Ask:
    """The worst case of this request for this key's limits (may set ``max_tokens``, see above);
    ``text``: a legacy completion (``prompt``, not ``messages``); ``responses``: a Responses API body."""
    lim = p.limits
    ask = Ask(lease_s=plan[0].retry_budget_s + max(a.provider.cfg.timeout_s for a in plan) + LEASE_SLACK_S)
    budget = any(lim.get(n) for n in USD_LIMITS)
    if not (lim.get("tpm") or budget):
        return ask
    if responses:
        ask.prompt_tokens = estimate_responses_prompt_tokens(body)
        completion = completion_budget(p, body, fields=RESPONSES_MAX)
    else:
        ask.prompt_tokens = estimate_text_prompt_tokens(body) if text else estimate_prompt_tokens(body)
        completion = completion_budget(p, body, text_generations(body) if text else None)
    if lim.get("tpm"):
        ask.tokens = ask.prompt_tokens + completion
    if budget:
        unpriced, ask.input_rate, ask.output_rate = plan_prices(plan, default_prices)
        if unpriced:
            raise PermissionDenied(
                f"This key has a USD budget, and the model `{body['model']}` has no prices, so the budget "
                "cannot be enforced on it. Ask the operator to set `prices` on its target or `default_prices` "
                "in the gateway config.", param="model", code="unpriced_model")
        ask.usd = ask.prompt_tokens * ask.input_rate + completion * ask.output_rate
    return ask


def used(res: Reservation, usage: dict[str, Any] | None, cost: float | None,
         out: dict[str, Any] | None) -> tuple[int, float]:
    """What to settle: the upstream's usage and cost when known. Without usage (an upstream error,
    a cut stream) the text that came back is estimated like a prompt, plus the prompt estimate,
    priced at the reserved rates; nothing came back: nothing is charged."""
    if usage:
        return int(usage.get("total_tokens") or 0), cost or 0.0
    text = sum(_text_bytes([c.get("message"), c.get("text")]) for c in (out or {}).get("choices") or [])
    if not text:
        return 0, 0.0
    completion = -(-text // BYTES_PER_TOKEN)
    ask = res.ask
    return ask.prompt_tokens + completion, ask.prompt_tokens * ask.input_rate + completion * ask.output_rate
