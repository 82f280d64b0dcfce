"""The embedded model's token counts without ``transformers``: its ``tokenizer.json`` through the ``tokenizers``
library, its chat template rendered in the sandbox that renders templates as ``transformers`` does
(``adapters.engine.jinja_sandbox``: the same environment, filters and globals). The same count as
``AutoTokenizer.apply_chat_template(..., tokenize=True)`` (tests/datasets/test_tokens.py compares them),
without importing torch: ``tuneloop dataset validate`` starts in about a second, not five.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from adapters.engine.jinja_sandbox import render

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")  # what the template may name
RENDER_TIMEOUT_S = 30.0
MAX_CHARS = 64 * 1024 * 1024


def _content(token: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string, or an ``AddedToken``'s fields."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


class ChatTokens:
    """``count(messages, tools)``: the tokens of the rendered conversation (no generation prompt)."""

    def __init__(self, folder: Path) -> None:
        import tokenizers

        config = orjson.loads((folder / "tokenizer_config.json").read_bytes())
        template = folder / "chat_template.jinja"
        self.source: str = template.read_text() if template.exists() else config["chat_template"]
        self.special = {name: value for name in SPECIAL if (value := _content(config.get(name))) is not None}
        self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))

    @staticmethod
    def usable(folder: Path) -> bool:
        if not (folder / "tokenizer.json").exists() or not (folder / "tokenizer_config.json").exists():
            return False
        return (folder / "chat_template.jinja").exists() or \
            "chat_template" in orjson.loads((folder / "tokenizer_config.json").read_bytes())

    def count(self, messages: list[dict[str, Any]], tools: Any = None) -> int:
        context = {**self.special, "messages": messages, "tools": tools or None, "documents": None,
                   "add_generation_prompt": False}
        text = render(self.source, context, RENDER_TIMEOUT_S, MAX_CHARS)
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
