"""Validate a JSONL file and report: counts, token histogram, problems, tokens and cost.

    rep = validate_file(Path("train.jsonl"), base="gpt-4o-mini", epochs=3)
    print(render(rep)); sys.exit(1 if rep["bad"] else 0)

Every bad line is listed with its 1-based line number and every reason (``problems``);
nothing is dropped silently. Estimated training tokens = tokens of valid lines ×
epochs (OpenAI bills that), cost = that × the base model's price per 1M tokens.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from adapters.datasets.tokens import PRICES_AS_OF, TokenCounter, base_model
from adapters.datasets.validate import check_line, conversation, detect_format

HIST_EDGES = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _bucket(n: int) -> str:
    lo = 0
    for edge in HIST_EDGES:
        if n <= edge:
            return f"{lo + 1}-{edge}"
        lo = edge
    return f">{HIST_EDGES[-1]}"


def validate_file(path: Path, fmt: str | None = None, base: str = "smollm2-135m-instruct",
                  epochs: int = 3, price_per_1m: float | None = None,
                  home: Path | None = None, max_problems: int = 1000) -> dict[str, Any]:
    model = base_model(base)
    counter = TokenCounter(model, home)
    problems: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    hist: Counter[str] = Counter()
    lines = good = bad = tokens = longest = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            lines += 1
            errs = _check(raw, fmt, counter, model.context)
            if isinstance(errs, int):
                good += 1
                tokens += errs
                longest = max(longest, errs)
                hist[_bucket(errs)] += 1
                continue
            bad += 1
            for e in errs:
                reasons[e.split(":")[0] if e.startswith("too long") else e] += 1
            if len(problems) < max_problems:
                problems.append({"line": lineno, "reasons": errs})
    price = price_per_1m if price_per_1m is not None else model.train_price_per_1m
    train_tokens = tokens * epochs
    return {
        "path": str(path), "base_model": model.name, "context_limit": model.context,
        "lines": lines, "valid": good, "bad": bad, "problems": problems,
        "problem_counts": dict(reasons.most_common()),
        "tokens": tokens, "max_tokens": longest, "epochs": epochs,
        "token_histogram": {k: hist[k] for k in _order(hist)},
        "estimated_training_tokens": train_tokens,
        "price_per_1m_training_tokens": price, "prices_as_of": PRICES_AS_OF,
        "estimated_cost_usd": None if price is None else round(train_tokens * price / 1e6, 4),
        "tokenizer": "exact (chat template)" if model.local_tokenizer else "estimate (chars/4)",
    }


def _order(hist: Counter[str]) -> list[str]:
    keys = [f"{lo + 1}-{hi}" for lo, hi in zip((0, *HIST_EDGES[:-1]), HIST_EDGES, strict=True)]
    return [k for k in [*keys, f">{HIST_EDGES[-1]}"] if k in hist]


def _check(raw: bytes, fmt: str | None, counter: TokenCounter, limit: int) -> int | list[str]:
    """Tokens of a valid line, or its problems."""
    if not raw.strip():
        return ["empty line"]
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [f"invalid JSON: {exc}"]
    if fmt and isinstance(obj, dict) and detect_format(obj) != fmt:
        return [f"not a {fmt} line (looks like {detect_format(obj)})"]
    errs = check_line(obj, fmt)
    if errs:
        return errs
    messages, tools = conversation(obj)
    try:
        n = counter.count(messages, tools)
    except Exception as exc:  # the chat template refused the conversation
        return [f"chat template failed: {exc}"]
    if n > limit:
        return [f"too long: {n} tokens > context limit {limit}"]
    return n


def render(rep: dict[str, Any]) -> str:
    out = [f"{rep['path']}: {rep['lines']} lines, {rep['valid']} valid, {rep['bad']} bad",
           f"base model {rep['base_model']} (context {rep['context_limit']}, "
           f"tokens: {rep['tokenizer']})",
           f"tokens: {rep['tokens']} total, longest example {rep['max_tokens']}"]
    hist = rep["token_histogram"]
    if hist:
        out.append("token histogram (tokens per example):")
        top = max(hist.values())
        for k, v in hist.items():
            out.append(f"  {k:>12} | {'#' * max(1, round(40 * v / top)):<40} {v}")
    out.append(f"estimated training tokens: {rep['estimated_training_tokens']} "
               f"({rep['epochs']} epochs)")
    if rep["estimated_cost_usd"] is not None:
        out.append(f"estimated cost: ${rep['estimated_cost_usd']:.4f} at "
                   f"${rep['price_per_1m_training_tokens']:.2f}/1M training tokens "
                   f"(prices as of {rep['prices_as_of']})")
    if rep["bad"]:
        out.append("problems by reason:")
        out += [f"  {n:6d}  {r}" for r, n in rep["problem_counts"].items()]
        out.append("bad lines:")
        for p in rep["problems"]:
            out += [f"  line {p['line']}: {r}" for r in p["reasons"]]
        if len(rep["problems"]) < rep["bad"]:
            out.append(f"  ... {rep['bad'] - len(rep['problems'])} more bad lines not listed")
    return "\n".join(out)
