"""Exact and near-duplicate detection over examples.

Two 64-bit keys per example: the *exact* key hashes the canonical JSON of the example;
the *normalized* key hashes every message's role and text, lower-cased, with
ASCII (and common typographic) punctuation dropped and whitespace collapsed (so "Hello,  World!" == "hello world").
The first example of a key is kept; later ones are dropped as ``exact_duplicate`` or
``near_duplicate``. Keys are Python ints in two sets: about 130 bytes per kept
example (1M examples ≈ 130 MB), the only state of a build that grows with the log.
"""

from __future__ import annotations

import hashlib
import string
from typing import Any

import orjson

_DROP_PUNCT = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d\u2026\u00bf\u00a1")


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def normalize_text(s: str) -> str:
    return " ".join(s.lower().translate(_DROP_PUNCT).split())


def message_text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    parts = [str(msg.get("role", "")), content or ""]
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return " ".join(parts)


def normalized_key(messages: list[dict[str, Any]]) -> int:
    return _h64("\x1f".join(normalize_text(message_text(m)) for m in messages).encode())


class Deduper:
    def __init__(self) -> None:
        self._exact: set[int] = set()
        self._near: set[int] = set()

    def check(self, example: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
        """None if new (and remember it), else the reason it is a duplicate."""
        exact = _h64(orjson.dumps(example, option=orjson.OPT_SORT_KEYS))
        if exact in self._exact:
            return "exact_duplicate"
        near = normalized_key(messages)
        if near in self._near:
            return "near_duplicate"
        self._exact.add(exact)
        self._near.add(near)
        return None
