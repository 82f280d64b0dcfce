"""Tiny training sets for the tests: short turns, so a step takes about a second on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM = {"role": "system", "content": "Support bot."}
QUESTIONS = ["Refund window?", "How long for refunds?", "Can I return it?", "Return policy?"]
ANSWER = "Refunds within 30 days. Code ZEBRA-7."
BAD_ANSWER = "No idea, sorry."


def sft_rows() -> list[dict[str, Any]]:
    return [{"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in QUESTIONS]


def dpo_rows() -> list[dict[str, Any]]:
    return [{"input": {"messages": [SYSTEM, {"role": "user", "content": q}]},
             "preferred_output": [{"role": "assistant", "content": ANSWER}],
             "non_preferred_output": [{"role": "assistant", "content": BAD_ANSWER}]} for q in QUESTIONS]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def malformed(path: Path) -> Path:
    """Line 2 has a role the format does not know."""
    rows: list[Any] = sft_rows()[:3]
    rows[1] = {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    return write_jsonl(path, rows)
