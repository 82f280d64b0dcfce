"""Circuit breakers and retry delays.

A breaker guards one replica: after ``failures`` failures in a row it opens, and requests
skip the replica without waiting; after ``cooldown_s`` one request is let through as a
probe (half-open); its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import random
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    __slots__ = ("failures", "cooldown_s", "streak", "opened_at", "probing")

    def __init__(self, failures: int = 5, cooldown_s: float = 10.0) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.streak = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """May a request go to this replica now? Takes the half-open probe slot if so."""
        if self.opened_at is None:
            return True
        if self.probing or time.monotonic() - self.opened_at < self.cooldown_s:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.streak = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.streak += 1
        self.probing = False
        if self.opened_at is not None or self.streak >= self.failures:
            self.opened_at = time.monotonic()


def backoff_s(attempt: int, retry_after: str | None, base: float = 0.1, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff; an upstream's ``retry-after`` (seconds) wins."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap * 6)
        except ValueError:
            pass
    return random.uniform(0, min(cap, base * 2**attempt))
