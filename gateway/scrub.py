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
a cheap substring test (``'@' in s``, any ASCII digit, a key prefix) before its regex
runs; a text without any of them comes back untouched after a few ``in`` tests. System
and developer prompts repeat from record to record: the ones found clean are remembered
(a bounded set) and not scanned again.
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

    CLEAN_CACHE = 4096  # remembered clean system/developer texts

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._clean: set[str] = set()

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
        # The _SECRET_HINTS and digit tests, unrolled (no generator per text). Every
        # _API_KEY match has a '-' or '_' (sk-, ghp_, github_pat_, xox?-): without
        # either, only the AWS and bearer hints can lead to a match.
        if ((("-" in s or "_" in s) and ("sk-" in s or "ghp_" in s or "github_pat_" in s
                                        or "xox" in s))
                or "AKIA" in s or "ASIA" in s or "earer" in s or "EARER" in s):
            s = self._sub(_API_KEY, "api_key", "[API_KEY]", s)
            s = self._sub(_AWS, "aws_key", "[AWS_KEY]", s)
            s = self._sub(_BEARER, "bearer", r"\1 [TOKEN]", s)
        if "@" in s:
            s = self._sub(_EMAIL, "email", "[EMAIL]", s)
        if ("0" in s or "1" in s or "2" in s or "3" in s or "4" in s or "5" in s or "6" in s
                or "7" in s or "8" in s or "9" in s):
            s = _CARD.sub(self._card, s)
            s = self._sub(_PHONE, "phone", "[PHONE]", s)
        return s

    def _repeated(self, s: str) -> str:
        """``text`` for texts that repeat (system prompts): clean ones are remembered."""
        if s in self._clean:
            return s
        before = sum(self.counts.values())
        out = self.text(s)
        if out == s and sum(self.counts.values()) == before:
            if len(self._clean) >= self.CLEAN_CACHE:
                self._clean.clear()
            self._clean.add(s)
        return out

    def message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Scrub a chat message in place (content, text parts, tool-call arguments)."""
        content = msg.get("content")
        if isinstance(content, str):
            if msg.get("role") in ("system", "developer"):
                msg["content"] = self._repeated(content)
            else:
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
