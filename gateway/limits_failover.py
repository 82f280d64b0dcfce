"""What per-key limits do while Redis is unreachable: ``redis_failure`` in the config
(``TUNELOOP_REDIS_FAILURE`` wins), ``open`` (the default) or ``closed``.

``FailoverLimiter`` wraps ``RedisLimiter``. A Redis call that fails (refused, reset, or no reply
within ``limits_redis.TIMEOUT_S``) marks the store down; no call tries Redis again for
``BACKOFF_S``, then the next one does (the others keep the fallback meanwhile), and the first
call Redis answers marks it up again. One WARNING when it goes down, one when it comes back.

While the store is down:

- ``open``: each replica admits and settles through its own ``MemoryLimiter``. Every limit of a
  key still holds, but per replica: N replicas admit up to N times a limit between them, and
  the counts of the current windows start again from zero in each. Never unlimited.
- ``closed``: requests of keys with limits get 503 ``limits_unavailable`` (OpenAI's envelope,
  with retry-after) until Redis answers again. Keys without limits never reach the limiter.

A reservation is settled by the store that admitted it (``Reservation.fallback``). A Redis
settle that fails, or that comes while the store is down, is dropped: the minute's counters
expire on their own and a concurrency slot when its lease ends; the USD reserved for it stays
counted at its worst case (not what was used) for the day and month.
"""

from __future__ import annotations

import logging
import math
import time

from prometheus_client import Counter, Gauge
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.auth import Principal
from gateway.errors import LimitsUnavailable, RateLimited
from gateway.ratelimit import Ask, Limiter, MemoryLimiter, Reservation

log = logging.getLogger("tuneloop.limits")

BACKOFF_S = 1.0  # after a failure, how long every call skips Redis before one tries it again
POLICIES = ("open", "closed")
STORE_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)
WHILE_DOWN = {"open": "each replica enforces every key's limits on its own, in memory",
              "closed": "requests of keys with limits get 503 until it answers"}

STORE_UP = Gauge("tuneloop_limits_store_up", "1 while the rate-limit store (Redis) answers, 0 while it is down",
                 multiprocess_mode="livemin")
STORE_ERRORS = Counter("tuneloop_limits_store_errors_total",
                       "Calls to the rate-limit store (Redis) that failed: refused, reset or timed out", ["op"])
# outcome: admitted (in memory), limited (429 from memory), refused (503, closed)
DEGRADED = Counter("tuneloop_limits_degraded_requests_total",
                   "Requests decided while the rate-limit store was down, by policy and outcome",
                   ["policy", "outcome"])


class FailoverLimiter:
    """A ``Limiter`` over ``store`` (Redis) that applies ``policy`` while the store is down."""

    def __init__(self, store: Limiter, policy: str = "open", backoff_s: float = BACKOFF_S) -> None:
        if policy not in POLICIES:
            raise ValueError(f"redis_failure must be one of {POLICIES}, not {policy!r}")
        self.store = store
        self.policy = policy
        self.backoff_s = backoff_s
        self.memory = MemoryLimiter()  # used only while the store is down
        self.up = True
        self.retry_at = 0.0  # time.monotonic(): while down, when the next call may try the store
        STORE_UP.set(1)

    async def admit(self, p: Principal, ask: Ask) -> Reservation:
        if self._may_try():
            try:
                res = await self.store.admit(p, ask)
            except RateLimited:  # the store answered: the key is over a limit
                self._answered()
                raise
            except STORE_FAILURES as exc:
                self._failed("admit", exc)
            else:
                self._answered()
                return res
        return await self._admit_degraded(p, ask)

    async def settle(self, res: Reservation, tokens: int, usd: float) -> None:
        if res.fallback:
            await self.memory.settle(res, tokens, usd)
            return
        if not self._may_try():
            log.debug("rate-limit store down: dropped the settle of a reservation of key %s", res.key)
            return
        try:
            await self.store.settle(res, tokens, usd)
        except STORE_FAILURES as exc:
            self._failed("settle", exc)
            log.info("rate-limit store unreachable: dropped the settle of a reservation of key %s "
                     "(its counters expire with their window, its slot with its lease)", res.key)
        else:
            self._answered()

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.memory.aclose()

    async def _admit_degraded(self, p: Principal, ask: Ask) -> Reservation:
        if self.policy == "closed":
            DEGRADED.labels("closed", "refused").inc()
            raise LimitsUnavailable(
                "The rate-limit store is unavailable (Redis is unreachable) and this gateway is configured "
                "to fail closed (redis_failure: closed). Retry shortly.",
                headers={"retry-after": str(max(1, math.ceil(self.backoff_s)))})
        try:
            res = await self.memory.admit(p, ask)
        except RateLimited:
            DEGRADED.labels("open", "limited").inc()
            raise
        DEGRADED.labels("open", "admitted").inc()
        res.fallback = True
        return res

    def _may_try(self) -> bool:
        """Whether this call goes to the store: always while it is up; while it is down, one
        call once the backoff has passed (it pushes the next try a backoff later)."""
        if self.up:
            return True
        now = time.monotonic()
        if now < self.retry_at:
            return False
        self.retry_at = now + self.backoff_s
        return True

    def _failed(self, op: str, exc: BaseException) -> None:
        STORE_ERRORS.labels(op).inc()
        self.retry_at = time.monotonic() + self.backoff_s
        if self.up:
            self.up = False
            STORE_UP.set(0)
            log.warning("rate-limit store (Redis) unreachable (%s: %s); failing %s while it is down: %s",
                        type(exc).__name__, exc, self.policy, WHILE_DOWN[self.policy])

    def _answered(self) -> None:
        if not self.up:
            self.up = True
            STORE_UP.set(1)
            log.warning("rate-limit store (Redis) answers again: limits are shared across replicas again")
