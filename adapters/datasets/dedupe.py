"""Exact and near-duplicate detection over examples.

Two 64-bit keys per example: the *exact* key hashes the canonical JSON of the example;
the *normalized* key hashes every message's role and text, lower-cased, with
ASCII (and common typographic) punctuation dropped and whitespace collapsed (so "Hello,  World!" == "hello world").
The first example of a key is kept; later ones are dropped as ``exact_duplicate`` or
``near_duplicate``.

Keys are fixed-size: 8-byte blake2b digests kept as ``uint64`` in a sorted numpy array
(plus a small Python set of the newest keys, merged into the array every
``KeySet.MERGE_AT`` keys): 16 bytes per kept example (two keys), 1M examples ≈ 16 MB.
Past ``KeySet.MEMORY_KEYS`` keys a set moves its sorted keys to a private temporary
SQLite table on disk (page cache capped), so memory stays flat whatever the log's
size; lookups there cost a B-tree probe per key. ``Deduper.check_batch`` takes a
batch's keys and probes the array (and the table) once per batch; per example only a
set lookup remains.
"""

from __future__ import annotations

import hashlib
import sqlite3
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

_PUNCT = string.punctuation + "\u2018\u2019\u201c\u201d\u2026\u00bf\u00a1"
_DROP_PUNCT = str.maketrans("", "", _PUNCT)
# ASCII fast path: bytes.translate maps every whitespace byte str.split knows (\t \n
# \x0b \x0c \r \x1c-\x1f) to a space and deletes ASCII punctuation; after .lower(), a
# text whose words are single-space separated is already normalized, otherwise
# bytes.split/join collapses the runs. Byte-for-byte the UTF-8 of ``normalize_text``
# for every ASCII string.
_ASCII_WS = bytes(range(256)).translate(bytes.maketrans(
    b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b"         "))
_ASCII_PUNCT = string.punctuation.encode()
_blake2b = hashlib.blake2b


def _h64(data: bytes) -> int:
    return int.from_bytes(_blake2b(data, digest_size=8).digest(), "little")


def digest8(data: bytes) -> bytes:
    """The 8-byte key of ``data`` (``_h64`` as little-endian bytes)."""
    return _blake2b(data, digest_size=8).digest()


def normalize_text(s: str) -> str:
    return " ".join(s.lower().translate(_DROP_PUNCT).split())


def normalize_bytes(s: str) -> bytes:
    """``normalize_text(s).encode()``, without leaving bytes for ASCII text."""
    if s.isascii():
        t = s.encode().translate(_ASCII_WS, _ASCII_PUNCT).lower()
        if b"  " in t or t[:1] == b" " or t[-1:] == b" ":
            return b" ".join(t.split())
        return t
    return normalize_text(s).encode()


def message_text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    parts = [str(msg.get("role", "")), content or ""]
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return " ".join(parts)


def _message_norm(msg: dict[str, Any]) -> bytes:
    content = msg.get("content")
    if isinstance(content, str) and "tool_calls" not in msg:
        role = msg.get("role", "")
        return normalize_bytes(f"{role if isinstance(role, str) else str(role)} {content}")
    return normalize_bytes(message_text(msg))


def normalized_digest(messages: list[dict[str, Any]]) -> bytes:
    return digest8(b"\x1f".join([_message_norm(m) for m in messages]))


def normalized_key(messages: list[dict[str, Any]]) -> int:
    return int.from_bytes(normalized_digest(messages), "little")


def exact_digest(example: dict[str, Any]) -> bytes:
    return digest8(orjson.dumps(example, option=orjson.OPT_SORT_KEYS))


class KeySet:
    """A set of uint64 keys: a small Python set of the newest, a sorted numpy array (8
    bytes a key) of the older ones and, past ``MEMORY_KEYS``, an on-disk table."""

    MERGE_AT = 1 << 16  # new keys that go into the sorted array at once
    MEMORY_KEYS = 1 << 21  # sorted keys kept in memory (16 MB); more go to disk

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._new: set[int] = set()
        self._disk: sqlite3.Connection | None = None
        self._disk_n = 0

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new) + self._disk_n

    def in_sorted(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` are in the sorted array or on disk (vectorized)."""
        arr = self._sorted
        if len(arr):
            idx = np.searchsorted(arr, keys)
            np.minimum(idx, len(arr) - 1, out=idx)
            found = arr[idx] == keys
        else:
            found = np.zeros(len(keys), dtype=bool)
        if self._disk is not None and len(keys):
            signed = keys.view(np.int64).tolist()
            hits: set[int] = set()
            for i in range(0, len(signed), 500):
                chunk = signed[i:i + 500]
                hits.update(k for (k,) in self._disk.execute(
                    f"SELECT k FROM keys WHERE k IN ({','.join('?' * len(chunk))})", chunk))
            if hits:
                found |= np.fromiter((k in hits for k in signed), dtype=bool, count=len(signed))
        return found

    def add(self, key: int) -> None:
        self._new.add(key)

    def merge(self, force: bool = False) -> None:
        if len(self._new) < (1 if force else self.MERGE_AT):
            return
        fresh = np.fromiter(self._new, dtype=np.uint64, count=len(self._new))
        fresh.sort()
        merged = np.concatenate((self._sorted, fresh))
        merged.sort(kind="stable")  # two sorted runs: one linear merge
        self._sorted = merged
        self._new = set()
        if len(self._sorted) >= self.MEMORY_KEYS:
            self._spill()

    def _spill(self) -> None:
        """Move the sorted keys to a private temporary SQLite database (deleted when
        closed; its page cache capped at 8 MB), so memory stays flat past any size."""
        if self._disk is None:
            self._disk = sqlite3.connect("")
            self._disk.execute("PRAGMA cache_size=-8192")
            self._disk.execute("PRAGMA journal_mode=OFF")
            self._disk.execute("PRAGMA synchronous=OFF")
            self._disk.execute("CREATE TABLE keys (k INTEGER PRIMARY KEY)")
        signed = self._sorted.view(np.int64)
        signed = np.sort(signed)  # the table's order (signed), for append-like inserts
        self._disk.executemany("INSERT INTO keys VALUES (?)", ((k,) for k in signed.tolist()))
        self._disk.commit()
        self._disk_n += len(signed)
        self._sorted = np.empty(0, dtype=np.uint64)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


class Deduper:
    def __init__(self) -> None:
        self._exact = KeySet()
        self._near = KeySet()

    def check(self, example: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
        """None if new (and remember it), else the reason it is a duplicate."""
        return self.check_batch([exact_digest(example)], [normalized_digest(messages)])[0]

    def check_batch(self, exact: Sequence[bytes], near: Sequence[bytes]) -> list[str | None]:
        """``check`` for a batch of examples in order, given their 8-byte digests."""
        if not exact:
            return []
        ek = np.frombuffer(b"".join(exact), dtype="<u8")
        nk = np.frombuffer(b"".join(near), dtype="<u8")
        e_old, n_old = self._exact.in_sorted(ek), self._near.in_sorted(nk)
        e_new, n_new = self._exact._new, self._near._new
        out: list[str | None] = []
        for e, n, eo, no in zip(ek.tolist(), nk.tolist(), e_old.tolist(), n_old.tolist(), strict=True):
            if eo or e in e_new:
                out.append("exact_duplicate")
            elif no or n in n_new:
                out.append("near_duplicate")
            else:
                e_new.add(e)
                n_new.add(n)
                out.append(None)
        self._exact.merge()
        self._near.merge()
        return out

    def close(self) -> None:
        self._exact.close()
        self._near.close()
