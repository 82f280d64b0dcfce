"""LLM-as-judge through the gateway: a 1-5 grade of a reply against the reference, as 0..1."""

from __future__ import annotations

import re
from typing import Any

PROMPT = """You grade a customer-support reply. Compare it with the reference reply.
Question: {question}
Reference reply: {reference}
Reply to grade: {reply}
Answer with one digit from 1 (wrong or unhelpful) to 5 (as good as the reference)."""


def grade(client: Any, judge_model: str, prompt: list[dict[str, Any]], reference: str | None,
          reply: str) -> float | None:
    question = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), "")
    resp = client.chat.completions.create(
        model=judge_model, temperature=0, max_tokens=4, metadata={"tuneloop": "eval"},
        messages=[{"role": "user", "content": PROMPT.format(question=question, reference=reference or "(none)",
                                                            reply=reply)}])
    match = re.search(r"[1-5]", resp.choices[0].message.content or "")
    return None if match is None else (int(match.group()) - 1) / 4.0
