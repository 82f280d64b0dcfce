"""Automatic prefix caching (vLLM's idea, simplified): reuse the KV of shared prompt prefixes.

Every chat prompt starts with the same system block from SmolLM2's template
(about 25 tokens), so most of a short prompt's prefill can be skipped.  Keys
are chains of 16-token block hashes per adapter (an adapter on ``k_proj`` /
``v_proj`` changes the KV, so the base model and each adapter have their own
entries).  An entry stores the KV of a whole block-aligned prompt prefix and is
indexed under each of its block boundaries, so a prompt sharing only the first
blocks uses a slice of it.  Entries are evicted least-recently-used once the
cache holds more than ``max_positions`` positions (each time a quarter of it has
been evicted, the freed memory goes back to the OS: ``adapters.engine.memory``).
The last prompt token is always prefilled, since its logits give the first output token.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from adapters.engine.memory import trim

BLOCK = 16


@dataclass
class Entry:
    kv: torch.Tensor  # [layers, 2, kv_heads, length, head_dim]
    keys: list[tuple[int, int]]


def block_hashes(adapter: int, prompt: list[int]) -> list[tuple[int, int]]:
    """``(adapter, hash)`` after each full block that leaves at least one token to prefill."""
    out, h = [], hash(("prefix", adapter))
    for end in range(BLOCK, len(prompt), BLOCK):
        h = hash((h, tuple(prompt[end - BLOCK : end])))
        out.append((adapter, h))
    return out


class PrefixCache:
    def __init__(self, max_positions: int = 8192):
        self.max_positions = max_positions
        self.positions = 0
        self._index: dict[tuple[int, int], Entry] = {}
        self._lru: OrderedDict[int, Entry] = OrderedDict()
        self.evicted = 0  # positions evicted since the heap was last trimmed
        self.trims = 0

    def lookup(self, keys: list[tuple[int, int]]) -> tuple[int, Entry | None]:
        """Longest cached prefix: ``(tokens, entry)``, or ``(0, None)``."""
        for i in range(len(keys) - 1, -1, -1):
            e = self._index.get(keys[i])
            if e is not None:
                self._lru.move_to_end(id(e))
                return (i + 1) * BLOCK, e
        return 0, None

    def insert(self, keys: list[tuple[int, int]], kv: torch.Tensor) -> None:
        """Store ``kv`` (covering ``len(keys)`` blocks) unless that prefix is already cached."""
        if not keys or keys[-1] in self._index or self.max_positions <= 0:
            return
        e = Entry(kv=kv, keys=keys)
        for k in keys:
            self._index[k] = e
        self._lru[id(e)] = e
        self.positions += kv.shape[3]
        while self.positions > self.max_positions and len(self._lru) > 1:
            _, old = self._lru.popitem(last=False)
            self.positions -= old.kv.shape[3]
            self.evicted += old.kv.shape[3]
            for k in old.keys:
                if self._index.get(k) is old:
                    del self._index[k]
            del old
        if self.evicted * 4 >= self.max_positions:  # a quarter turned over: give the freed copies back
            self.evicted = 0
            self.trims += 1
            trim()

    def clear(self) -> None:
        self._index.clear()
        self._lru.clear()
        self.positions = 0
