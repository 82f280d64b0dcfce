"""Base models a dataset may target: context limit, how tokens are counted, price.

- ``smollm2-135m-instruct`` (the local engine's base): the real tokenizer and chat
  template, loaded lazily from ``$TUNELOOP_HOME/models/smollm2-135m-instruct`` (the
  engine's cache) or, when that cache is not built yet, from the GGUF file alone
  (tokenizer only, no weights). Context 8192.
- OpenAI models: no tokenizer is bundled (``tiktoken`` needs to download its tables),
  so tokens are estimated as ``ceil(chars / 4) + 4`` per message + 3 per example, the
  usual rule of thumb for English (o200k averages about 4 chars a token). Limits are
  OpenAI's per-example training limits.

Training prices are USD per 1M training tokens, as published on
openai.com/api/pricing on ``PRICES_AS_OF``; ``--price-per-1m`` overrides them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

import orjson

from adapters.datasets.chat_tokens import ChatTokens
from adapters.engine import paths

PRICES_AS_OF = "2025-06-01"


@dataclass(frozen=True)
class BaseModel:
    name: str
    context: int
    train_price_per_1m: float | None  # USD; None = local (no charge)
    local_tokenizer: bool = False


BASE_MODELS = {m.name: m for m in (
    BaseModel("smollm2-135m-instruct", 8192, None, local_tokenizer=True),
    BaseModel("gpt-4o-mini-2024-07-18", 65_536, 3.00),
    BaseModel("gpt-4o-2024-08-06", 65_536, 25.00),
    BaseModel("gpt-4.1-2025-04-14", 65_536, 25.00),
    BaseModel("gpt-4.1-mini-2025-04-14", 65_536, 5.00),
    BaseModel("gpt-4.1-nano-2025-04-14", 65_536, 1.50),
)}
ALIASES = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06",
           "gpt-4.1": "gpt-4.1-2025-04-14", "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
           "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14", "smollm2": "smollm2-135m-instruct"}


def base_model(name: str) -> BaseModel:
    key = ALIASES.get(name, name)
    if key not in BASE_MODELS:
        known = ", ".join(sorted({*BASE_MODELS, *ALIASES}))
        raise KeyError(f"unknown base model {name!r}; known: {known}")
    return BASE_MODELS[key]


def load_local_tokenizer(home: Path | None = None) -> Any:
    """The engine's tokenizer only (no weights), from its cache or from the GGUF file (transformers')."""
    from transformers import AutoTokenizer

    cached = _cache(home)
    if (cached / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    return AutoTokenizer.from_pretrained(paths.gguf_dir(), gguf_file=paths.GGUF_FILE)


def _cache(home: Path | None) -> Path:
    return paths.cache_dir(home or Path(os.environ.get("TUNELOOP_HOME") or paths.default_home()))


def _counter(home: Path | None) -> Any:
    """What counts the engine's tokens: ``ChatTokens`` from its cache (neither transformers nor torch), or
    transformers' tokenizer when the cache is not built yet (from the GGUF file)."""
    cached = _cache(home)
    return ChatTokens(cached) if ChatTokens.usable(cached) else load_local_tokenizer(home)


def _approx(messages: list[dict[str, Any]], tools: Any) -> int:
    n = 3
    for m in messages:
        n += 4 + ceil(len(orjson.dumps(m.get("content") or "")) / 4)
        if m.get("tool_calls"):
            n += ceil(len(orjson.dumps(m["tool_calls"])) / 4)
    if tools:
        n += ceil(len(orjson.dumps(tools)) / 4)
    return n


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SmolLM2's chat template knows neither ``tool_calls`` nor null content: a tool call
    is counted as its JSON in the content, which is how a local trainer renders it."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if m.get("tool_calls"):
            content = (content or "") + orjson.dumps(m["tool_calls"]).decode()
        out.append({"role": m.get("role"), "content": content or ""})
    return out


class TokenCounter:
    """Tokens of one example's conversation (messages + tools) for a base model."""

    def __init__(self, model: BaseModel, home: Path | None = None) -> None:
        self.model = model
        self._tok = _counter(home) if model.local_tokenizer else None

    def count(self, messages: list[dict[str, Any]], tools: Any = None) -> int:
        if self._tok is None:
            return _approx(messages, tools)
        if isinstance(self._tok, ChatTokens):
            return self._tok.count(_plain(messages), tools)
        ids = self._tok.apply_chat_template(_plain(messages), tools=tools or None,
                                            tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
