"""Giving freed memory back to the OS (glibc's ``malloc_trim``).

The prefix cache's entries are copies of ~1.4 MiB each (SmolLM2, 32 positions); once it is full,
every new prompt evicts old entries. glibc keeps such freed chunks in the process's heap (they sit
between live ones, so the heap cannot shrink from its top), and the engine's RSS crept up by about
128 MiB per thousand unique prompts in the soak (loadtests/soak.py), after the cache had reached its
cap. ``trim`` asks glibc to return every free page to the OS; the cache calls it each time a quarter
of it has been evicted, so it runs rarely (a few ms each time). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None
try:
    _name = ctypes.util.find_library("c")
    if _name:
        _libc = ctypes.CDLL(_name)
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
    _libc = None


def trim() -> bool:
    """Return free heap memory to the OS; True when glibc released some."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))
