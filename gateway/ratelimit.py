"""Per-key limits: requests and tokens per minute, USD per day and month, concurrent requests.

Reserve, then settle. At admission a request reserves its worst case (``Ask``: the prompt
estimate plus max_tokens × n against ``tpm``, that priced at the plan's dearest rates
against the USD budgets, one request against ``rpm``, one slot against ``max_concurrency``),
all or nothing: if any limit cannot hold the reservation the request gets 429 and reserves
nothing. When the request ends (reply, error, disconnect) ``settle`` swaps the reservation
for what it actually used and frees the slot. So N concurrent requests can never together
pass a limit by more than their estimates were short (see ``gateway.reserve``).

Windows are fixed (the minute / UTC day / UTC month of admission; a request settles in the
window it was admitted in). Over a limit: 429 with OpenAI's headers
(``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``) and ``retry-after``; a spent
budget is 429 ``insufficient_quota``.

``MemoryLimiter`` keeps the counters in the process; ``RedisLimiter`` (``limits_redis``)
shares them across replicas (``limits_failover``: what happens while Redis is unreachable,
``redis_failure``), ``SqliteLimiter`` (``limits_sqlite``) across the worker
processes of one ``tuneloop serve --workers N``. All three apply the rules of ``over``.
"""

from __future__ import annotations

import calendar
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.auth import Principal
from gateway.errors import RateLimited

Headers = list[tuple[bytes, bytes]]
LIMIT_ORDER = ("rpm", "tpm", "max_concurrency", "usd_per_day", "usd_per_month")
EPSILON_USD = 1e-12  # float sums of prices


@dataclass(slots=True)
class Ask:
    """What one request may consume at most (``gateway.reserve.ask_for`` builds it)."""

    tokens: int = 0  # reserved against tpm (0 when the key has no tpm)
    usd: float = 0.0  # reserved against the USD budgets (0 when the key has none)
    prompt_tokens: int = 0  # the prompt estimate inside ``tokens``
    input_rate: float = 0.0  # USD per token, the dearest of the plan's targets
    output_rate: float = 0.0
    lease_s: float = 600.0  # a shared store frees a slot by then even if its replica died


@dataclass(slots=True)
class Reservation:
    key: str
    ask: Ask
    minute: int
    day: str
    month: str
    slot: str | None  # the concurrency slot's id, when the key has max_concurrency
    headers: Headers
    settled: bool = False
    fallback: bool = False  # admitted in memory while Redis was down: settled there too (limits_failover)


@dataclass(slots=True)
class Usage:
    """A key's counters in the current windows (reservations included)."""

    requests: int = 0
    tokens: float = 0.0
    usd_day: float = 0.0
    usd_month: float = 0.0
    inflight: int = 0


class Limiter(Protocol):
    async def admit(self, p: Principal, ask: Ask) -> Reservation: ...

    async def settle(self, res: Reservation, tokens: int, usd: float) -> None: ...

    async def aclose(self) -> None: ...


def key_of(p: Principal) -> str:
    return p.key_id or "anonymous"


def windows(now: float) -> tuple[int, str, str, int]:
    """(minute, UTC day, UTC month, seconds until the minute ends)."""
    day = time.strftime("%Y%m%d", time.gmtime(now))
    return int(now // 60), day, day[:6], int(60 - now % 60) or 1


def _until_next(name: str, now: float) -> int:
    t = time.gmtime(now)
    if name == "usd_per_day":
        return max(1, 86400 - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return max(1, int(calendar.timegm((year, month, 1, 0, 0, 0)) - now))


def over(lim: dict[str, float], u: Usage, ask: Ask) -> str | None:
    """The first limit (in ``LIMIT_ORDER``) that cannot take this request, or None."""
    if lim.get("rpm") and u.requests + 1 > lim["rpm"]:
        return "rpm"
    if lim.get("tpm") and u.tokens + ask.tokens > lim["tpm"]:
        return "tpm"
    if lim.get("max_concurrency") and u.inflight + 1 > lim["max_concurrency"]:
        return "max_concurrency"
    if lim.get("usd_per_day") and u.usd_day + ask.usd > lim["usd_per_day"] + EPSILON_USD:
        return "usd_per_day"
    if lim.get("usd_per_month") and u.usd_month + ask.usd > lim["usd_per_month"] + EPSILON_USD:
        return "usd_per_month"
    return None


def headers(lim: dict[str, float], u: Usage, reset_s: int) -> Headers:
    out: Headers = []
    if rpm := lim.get("rpm"):
        out += [(b"x-ratelimit-limit-requests", b"%d" % rpm),
                (b"x-ratelimit-remaining-requests", b"%d" % max(rpm - u.requests, 0)),
                (b"x-ratelimit-reset-requests", b"%ds" % reset_s)]
    if tpm := lim.get("tpm"):
        out += [(b"x-ratelimit-limit-tokens", b"%d" % tpm),
                (b"x-ratelimit-remaining-tokens", b"%d" % max(tpm - u.tokens, 0)),
                (b"x-ratelimit-reset-tokens", b"%ds" % reset_s)]
    return out


def refusal(lim: dict[str, float], kind: str, u: Usage, ask: Ask, now: float) -> RateLimited:
    """The 429 for ``kind`` (a name from ``LIMIT_ORDER``), with OpenAI's headers."""
    reset = windows(now)[3]
    hdrs = {k.decode(): v.decode() for k, v in headers(lim, u, reset)}
    if kind == "rpm":
        return RateLimited(f"Rate limit reached for requests per minute: limit {int(lim['rpm'])}, "
                           f"used {u.requests}.", headers={"retry-after": str(reset), **hdrs})
    if kind == "tpm":
        tpm = int(lim["tpm"])
        if ask.tokens > tpm:
            msg = (f"Request too large for tokens per minute: limit {tpm}, requested {ask.tokens} "
                   "(the prompt estimate plus max_tokens × n). Lower max_tokens or n.")
        else:
            msg = (f"Rate limit reached for tokens per minute: limit {tpm}, used {int(u.tokens)}, "
                   f"requested {ask.tokens}.")
        return RateLimited(msg, headers={"retry-after": str(reset), **hdrs})
    if kind == "max_concurrency":
        return RateLimited(f"Too many concurrent requests for this key: limit {int(lim[kind])}.",
                           headers={"retry-after": "1", **hdrs})
    spent = u.usd_day if kind == "usd_per_day" else u.usd_month
    if ask.usd > lim[kind]:
        msg = (f"This request may cost up to ${ask.usd:.6f}, more than this key's budget of ${lim[kind]} "
               f"({kind}). Lower max_tokens or n.")
    else:
        msg = (f"You exceeded your budget of ${lim[kind]} ({kind}): ${spent:.6f} spent or reserved, "
               f"this request may cost up to ${ask.usd:.6f}.")
    return RateLimited(msg, code="insufficient_quota",
                       headers={"retry-after": str(_until_next(kind, now)), **hdrs})


def new_slot(p: Principal) -> str | None:
    return uuid.uuid4().hex if p.limits.get("max_concurrency") else None


class MemoryLimiter:
    """One process's counters; check-and-reserve runs without an await, so it is atomic."""

    def __init__(self) -> None:
        self.minute: dict[str, list[Any]] = {}  # key -> [minute, requests, tokens]
        self.usd: dict[str, list[Any]] = {}  # key -> [day, usd, month, usd]
        self.inflight: dict[str, int] = {}

    def _usage(self, key: str, minute: int, day: str, month: str) -> Usage:
        m = self.minute.get(key)
        d = self.usd.get(key)
        u = Usage(inflight=self.inflight.get(key, 0))
        if m and m[0] == minute:
            u.requests, u.tokens = m[1], m[2]
        if d:
            u.usd_day = d[1] if d[0] == day else 0.0
            u.usd_month = d[3] if d[2] == month else 0.0
        return u

    async def admit(self, p: Principal, ask: Ask) -> Reservation:
        key, now = key_of(p), time.time()
        minute, day, month, reset = windows(now)
        u = self._usage(key, minute, day, month)
        if kind := over(p.limits, u, ask):
            raise refusal(p.limits, kind, u, ask, now)
        u.requests += 1
        u.tokens += ask.tokens
        u.usd_day += ask.usd
        u.usd_month += ask.usd
        self.minute[key] = [minute, u.requests, u.tokens]
        self.usd[key] = [day, u.usd_day, month, u.usd_month]
        slot = new_slot(p)
        if slot:
            self.inflight[key] = u.inflight + 1
        return Reservation(key, ask, minute, day, month, slot, headers(p.limits, u, reset))

    async def settle(self, res: Reservation, tokens: int, usd: float) -> None:
        m = self.minute.get(res.key)
        if m and m[0] == res.minute:
            m[2] += tokens - res.ask.tokens
        d = self.usd.get(res.key)
        if d:
            if d[0] == res.day:
                d[1] += usd - res.ask.usd
            if d[2] == res.month:
                d[3] += usd - res.ask.usd
        if res.slot:
            left = self.inflight.get(res.key, 1) - 1
            if left > 0:
                self.inflight[res.key] = left
            else:
                self.inflight.pop(res.key, None)

    async def aclose(self) -> None:
        pass


SHARED_LIMITS_ENV = "TUNELOOP_LIMITS_DB"  # set by `serve --workers N` for its workers


def make_limiter(redis_url: str | None, redis_failure: str = "open") -> Limiter:
    """Redis when configured (``redis_failure``: what happens while it is unreachable, see
    ``gateway.limits_failover``); else a SQLite file shared by the workers of one ``serve``
    (``TUNELOOP_LIMITS_DB``, set by ``serve --workers N``); else this process's memory."""
    if redis_url:
        from gateway.limits_failover import FailoverLimiter
        from gateway.limits_redis import RedisLimiter

        return FailoverLimiter(RedisLimiter(redis_url), redis_failure)
    if path := os.environ.get(SHARED_LIMITS_ENV):
        from gateway.limits_sqlite import SqliteLimiter

        return SqliteLimiter(path)
    return MemoryLimiter()
