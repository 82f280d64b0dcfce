"""Circuit breakers and retry delays.

A breaker guards one replica: after ``failures`` faults in a row (no success between) it
opens, and requests skip the replica without waiting; after ``cooldown_s`` one request is
let through as a probe (half-open); its success closes the breaker, its fault opens it
again.

What counts: only what says something about the replica, never what the caller did.

* **Replica faults** count, whoever's request met them: the replica could not be reached,
  the connection broke, it answered garbage or 502/503/504, or it did not answer in time.
  No request body can cause these on a healthy replica.
* **Suspect faults** (the replica answered an error that the request itself may have
  caused: an HTTP 500 or another 5xx, an error event in the middle of a stream) count
  only once callers of at least two tenants have met them in the same run of faults.
  One tenant can hit an engine bug with a crafted request as often as it likes: that
  run never opens the breaker for the others (issue 21: three ``return_tensors``
  requests, each an engine 500, gave every other tenant 503 for 10 s). A replica that
  answers 500 to everybody still opens it as soon as a second tenant meets it. The cost:
  with a single caller identity (auth off, one project) 500s alone never open it;
  unreachable, hanging and overloaded replicas still do.
* **Upstream 4xx** (the request was refused: 400, 404, 422, 429...) are the caller's
  business and count as a success: the replica is alive and answering.

A probe that ends without a verdict (the client went away, a TTFT timeout cancelled it)
gives its slot back (``release``) so the next request probes instead.
"""

from __future__ import annotations

import random
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    __slots__ = ("failures", "cooldown_s", "streak", "suspects", "opened_at", "probing")

    def __init__(self, failures: int = 5, cooldown_s: float = 10.0) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.streak = 0  # faults since the last success that count toward opening
        self.suspects: dict[str | None, int] = {}  # suspect faults in this run, per tenant
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def is_open(self) -> bool:
        """Open and still cooling down (no probe would be let through now)."""
        return self.opened_at is not None and (
            self.probing or time.monotonic() - self.opened_at < self.cooldown_s)

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
        self.suspects.clear()
        self.opened_at = None
        self.probing = False

    def release(self) -> None:
        """The request ended without a verdict on the replica: free the probe slot."""
        self.probing = False

    def failure(self, tenant: str | None = None, *, suspect: bool = False) -> None:
        """A fault; ``suspect`` ones (see above) count only once two tenants have met them."""
        self.probing = False
        if suspect:
            self.suspects[tenant] = self.suspects.get(tenant, 0) + 1
            if len(self.suspects) < 2:
                return
            counted = self.streak + sum(self.suspects.values())
            self.streak, self.suspects = counted, {t: 0 for t in self.suspects}  # counted once
        else:
            self.streak += 1
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
