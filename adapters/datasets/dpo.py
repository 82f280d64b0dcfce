"""DPO lines in OpenAI's preference format.

    {"input": {"messages": [...], "tools": [...]},
     "preferred_output": [assistant], "non_preferred_output": [assistant]}

Two sources of pairs:

1. a correction against the reply it corrects (one record → one pair);
2. two replies to the same prompt (same normalized messages and tools) with different
   newest ratings: the best-rated reply is preferred over the worst-rated one. The
   builder keeps only the best and the worst reply per prompt while it streams
   (``RatedPairs``), so memory grows with the number of distinct rated prompts, not
   with the log.
"""

from __future__ import annotations

from typing import Any

from adapters.datasets.dedupe import normalized_key
from adapters.datasets.messages import (
    correction_message,
    has_content,
    prompt_messages,
    reply_message,
    request_extras,
)


def dpo_line(prompt: list[dict[str, Any]], extras: dict[str, Any], good: dict[str, Any],
             bad: dict[str, Any]) -> dict[str, Any]:
    return {"input": {"messages": prompt, **extras}, "preferred_output": [good],
            "non_preferred_output": [bad]}


def correction_pair(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A pair from a corrected record, or the reason there is none."""
    if row.get("status") != 200 or not row.get("response"):
        return None, "failed"
    prompt = prompt_messages(row.get("request"))
    if prompt is None:
        return None, "no_messages"
    fixed, reply = correction_message(row.get("correction")), reply_message(row["response"])
    if not has_content(fixed):
        return None, "no_correction"
    if not has_content(reply):
        return None, "empty_reply"
    if _same(fixed, reply):
        return None, "correction_equals_reply"
    return dpo_line(prompt, request_extras(row.get("request")), fixed, reply), "correction"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return normalized_key([a]) == normalized_key([b])


class RatedPairs:
    """Best and worst rated reply per normalized prompt, kept while streaming."""

    def __init__(self) -> None:
        self._groups: dict[int, dict[str, Any]] = {}

    def add(self, row: dict[str, Any]) -> bool:
        rating = row.get("rating")
        if rating is None or row.get("status") != 200:
            return False
        prompt = prompt_messages(row.get("request"))
        reply = reply_message(row.get("response"))
        if prompt is None or not has_content(reply) or row.get("finish_reason") == "length":
            return False
        extras = request_extras(row.get("request"))
        key = normalized_key([*prompt, {"role": "tools", "content": repr(extras)}])
        entry = (float(rating), row["id"], reply)
        g = self._groups.get(key)
        if g is None:
            self._groups[key] = {"prompt": prompt, "extras": extras, "best": entry, "worst": entry}
            return True
        if entry[0] > g["best"][0]:
            g["best"] = entry
        if entry[0] < g["worst"][0]:
            g["worst"] = entry
        return True

    def pairs(self) -> list[tuple[dict[str, Any], list[str]]]:
        """``(line, [preferred id, non-preferred id])`` for every prompt with a rating gap."""
        out = []
        for g in self._groups.values():
            (hi, hi_id, good), (lo, lo_id, bad) = g["best"], g["worst"]
            if hi > lo and not _same(good, bad):
                out.append((dpo_line(g["prompt"], g["extras"], good, bad), [hi_id, lo_id]))
        return out
