"""The prefix cache gives evicted entries' memory back (adapters.engine.memory): the soak found the
engine's RSS creeping once the cache was full (glibc kept the freed copies in the heap). Each probe runs
in its own process, so one's heap does not blur the other's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adapters.engine.memory import _libc

PROBE = """
import sys, torch
import adapters.engine.prefix as P
if sys.argv[1] == "off":
    P.trim = lambda: False
def rss():
    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) // 1024
cache, live, full = P.PrefixCache(8192), [], None
for i in range(1200):
    live.append(torch.randn(1000))  # small live allocations between the entries: the heap fragments
    cache.insert(P.block_hashes(0, list(range(i * 100, i * 100 + 60))), torch.randn(30, 2, 3, 48, 64))
    if i == 300:
        full = rss()  # the cache (~375 MiB) is full well before this
print(full, rss(), cache.trims)
"""


def _probe(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    full, end, trims = map(int, out.stdout.split())
    return full, end, trims


@pytest.mark.skipif(_libc is None, reason="not glibc: there is no malloc_trim to call")
def test_a_full_cache_turning_over_stays_flat():
    full, end, trims = _probe("on")
    assert trims >= 10
    assert end < full * 1.25, (full, end)  # flat once full (a few % of noise)
    off_full, off_end, _ = _probe("off")
    assert off_end > off_full * 1.5, (off_full, off_end)  # the creep it prevents (the probe can tell)
