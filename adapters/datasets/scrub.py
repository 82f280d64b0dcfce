"""PII and secret scrubbing: matches become placeholders such as ``[EMAIL]``.

Kinds and placeholders (counted per kind in the build report):

- ``api_key``   ``sk-…`` (OpenAI, incl. ``sk-proj-…``), ``ghp_…``/``github_pat_…``, ``xox[abp]-…`` → ``[API_KEY]``
- ``aws_key``   ``AKIA…``/``ASIA…`` access key ids → ``[AWS_KEY]``
- ``bearer``    ``Bearer <token>`` → ``Bearer [TOKEN]``
- ``email``     → ``[EMAIL]``
- ``card``      13-19 digits (spaces/dashes allowed) that pass the Luhn check → ``[CARD]``
- ``phone``     ``+33 6 12 34 56 78``, ``(415) 555-0134``, ``415-555-0134`` → ``[PHONE]``

Order matters: secrets, then emails, then cards, then phones (a card number is never
half-eaten as a phone). Most texts contain none of these, so each family is guarded by
a cheap substring test (``'@' in s``, any digit, a key prefix) before its regex runs.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_SECRET_HINTS = ("sk-", "AKIA", "ASIA", "ghp_", "github_pat_", "xox", "earer", "EARER")
_API_KEY = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{16,}|ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
                      r"|xox[abp]-[A-Za-z0-9\-]{10,})")
_AWS = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_BEARER = re.compile(r"\b([Bb]earer|BEARER)\s+[A-Za-z0-9\-._~+/]{12,}=*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d\w])\d(?:[ \-]?\d){12,18}(?![\d\w])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]?\d{4}"
    r"|\d{3}[.\-]\d{3}[.\-]\d{4})(?![\w])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Scrubber:
    """Replace PII in strings; ``counts`` accumulates matches per kind across calls."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def _sub(self, pattern: re.Pattern[str], kind: str, repl: str, text: str) -> str:
        out, n = pattern.subn(repl, text)
        if n:
            self.counts[kind] += n
        return out

    def _card(self, m: re.Match[str]) -> str:
        digits = re.sub(r"[ \-]", "", m.group(0))
        if luhn_ok(digits):
            self.counts["card"] += 1
            return "[CARD]"
        return m.group(0)

    def text(self, s: str) -> str:
        if any(h in s for h in _SECRET_HINTS):
            s = self._sub(_API_KEY, "api_key", "[API_KEY]", s)
            s = self._sub(_AWS, "aws_key", "[AWS_KEY]", s)
            s = self._sub(_BEARER, "bearer", r"\1 [TOKEN]", s)
        if "@" in s:
            s = self._sub(_EMAIL, "email", "[EMAIL]", s)
        if any(d in s for d in "0123456789"):
            s = _CARD.sub(self._card, s)
            s = self._sub(_PHONE, "phone", "[PHONE]", s)
        return s

    def message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Scrub a chat message in place (content, text parts, tool-call arguments)."""
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"] = self.text(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = self.text(part["text"])
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                fn["arguments"] = self.text(fn["arguments"])
        return msg

    def messages(self, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for m in msgs:
            if isinstance(m, dict):
                self.message(m)
        return msgs
