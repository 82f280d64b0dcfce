"""Task checks a support team can read: does the reply contain X, match a pattern, parse as JSON,
equal a label?

A check is a dict: ``{"type": "contains", "value": "Hi there!"}``, ``{"type": "regex",
"pattern": "\\$\\d+"}``, ``{"type": "json"}`` or ``{"type": "label", "value": "refund"}``
(the whole reply, trimmed and case-folded). On the command line: ``contains:TEXT``,
``regex:PATTERN``, ``json``, ``label:VALUE``. Checks come per example (a ``checks`` list
on its line) and per run (applied to every example).
"""

from __future__ import annotations

import json
import re
from typing import Any

KINDS = ("contains", "regex", "json", "label")


def parse(spec: str) -> dict[str, Any]:
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown check {spec!r}: use contains:TEXT, regex:PATTERN, json or label:VALUE")
    if kind == "json":
        return {"type": "json"}
    return {"type": kind, "pattern" if kind == "regex" else "value": arg}


def passes(check: dict[str, Any], reply: str) -> bool:
    kind = check["type"]
    if kind == "contains":
        return str(check["value"]).casefold() in reply.casefold()
    if kind == "regex":
        return re.search(check["pattern"], reply) is not None
    if kind == "label":
        return reply.strip().casefold() == str(check["value"]).strip().casefold()
    if kind == "json":
        try:
            json.loads(reply)
        except ValueError:
            return False
        return True
    raise ValueError(f"unknown check type {kind!r}")


def label(check: dict[str, Any]) -> str:
    arg = check.get("value", check.get("pattern"))
    return check["type"] if arg is None else f"{check['type']}:{arg}"


def score(checks: list[dict[str, Any]], reply: str) -> tuple[float | None, list[bool]]:
    """Fraction of checks passed (None without checks) and each outcome."""
    if not checks:
        return None, []
    results = [passes(c, reply) for c in checks]
    return sum(results) / len(results), results
