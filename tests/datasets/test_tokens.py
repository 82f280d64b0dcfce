"""The dataset commands count the embedded model's tokens without transformers (``ChatTokens``: its
tokenizer.json and its chat template in the sandbox that renders templates as transformers does): the
same counts as ``AutoTokenizer.apply_chat_template``, and no torch in the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.datasets.chat_tokens import ChatTokens
from adapters.datasets.tokens import BASE_MODELS, TokenCounter, _plain

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order.",
                                           "parameters": {"type": "object", "properties": {
                                               "order_id": {"type": "string"}}, "required": ["order_id"]}}}]
CONVERSATIONS = [
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], None),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Où est mon colis ? 📦"},
      {"role": "assistant", "content": "Il arrive demain.\n\nMerci !"}], None),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
      {"role": "assistant", "content": "  spaced <|im_end|> text  "}], None),
    ([{"role": "user", "content": "Where is order 7?"},
      {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
          "name": "lookup_order", "arguments": "{\"order_id\": \"7\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "{\"eta\": \"Friday\"}"},
      {"role": "assistant", "content": "It ships Friday."}], TOOLS),
    ([{"role": "user", "content": [{"type": "text", "text": "parts "}, {"type": "text", "text": "joined"}]},
      {"role": "assistant", "content": ""}], TOOLS),
]


@pytest.fixture(scope="module")
def cache() -> Path:
    from adapters.engine.model import ensure_cached

    return ensure_cached()


@pytest.mark.parametrize("messages,tools", CONVERSATIONS)
def test_counts_equal_transformers(cache: Path, messages: list, tools: list | None) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(cache).apply_chat_template(
        _plain(messages), tools=tools, tokenize=True, return_dict=False)
    assert ChatTokens(cache).count(_plain(messages), tools) == len(reference)


def test_the_counter_uses_it_and_loads_no_torch(cache: Path) -> None:
    assert isinstance(TokenCounter(BASE_MODELS["smollm2-135m-instruct"])._tok, ChatTokens)
    code = ("import sys; from adapters.datasets.tokens import TokenCounter, BASE_MODELS; "
            "n = TokenCounter(BASE_MODELS['smollm2-135m-instruct']).count([{'role': 'user', 'content': 'hi'}]); "
            "print(n, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) > 0 and loaded.strip() == "[]", out.stdout
