"""Train/validation split that is stable across rebuilds.

A record goes to validation when ``blake2b(key) mod 10000 < val_fraction * 10000``: it
depends only on the record's id (for a DPO pair built from two records, both ids), so
a rebuild with more traffic never moves an old record between splits.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % BUCKETS


def split_of(key: str, val_fraction: float) -> str:
    return "val" if bucket(key) < round(val_fraction * BUCKETS) else "train"
