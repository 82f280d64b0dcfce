"""Per-key limits: requests and tokens per minute, USD per day and per month.

Over a limit the request gets 429 with OpenAI's headers (``x-ratelimit-{limit,remaining,
reset}-{requests,tokens}``) and ``retry-after``; a spent budget is 429
``insufficient_quota``. Windows are fixed (the current minute / UTC day / UTC month).
Requests are counted when admitted; tokens and cost when the reply is known, so one
request may overshoot the token limit, as with OpenAI.

``MemoryLimiter`` keeps the counters in the process; ``RedisLimiter`` shares them across
gateway replicas (one pipelined round trip per check).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from gateway.auth import Principal
from gateway.errors import RateLimited

Headers = list[tuple[bytes, bytes]]


def _windows(now: float) -> tuple[int, str, str, int]:
    minute = int(now // 60)
    day = time.strftime("%Y%m%d", time.gmtime(now))
    return minute, day, day[:6], int(60 - now % 60) or 1


def _decide(p: Principal, used_requests: int, used_tokens: float, usd_day: float,
            usd_month: float, reset_s: int) -> Headers:
    """Raise RateLimited if a limit is crossed; else the x-ratelimit headers to send."""
    lim = p.limits
    headers: Headers = []
    rpm, tpm = lim.get("rpm"), lim.get("tpm")
    if rpm:
        headers += [(b"x-ratelimit-limit-requests", b"%d" % rpm),
                    (b"x-ratelimit-remaining-requests", b"%d" % max(rpm - used_requests, 0)),
                    (b"x-ratelimit-reset-requests", b"%ds" % reset_s)]
    if tpm:
        headers += [(b"x-ratelimit-limit-tokens", b"%d" % tpm),
                    (b"x-ratelimit-remaining-tokens", b"%d" % max(tpm - used_tokens, 0)),
                    (b"x-ratelimit-reset-tokens", b"%ds" % reset_s)]
    over = None
    if rpm and used_requests > rpm:
        over = f"Rate limit reached for requests per minute: limit {int(rpm)}."
    elif tpm and used_tokens >= tpm:
        over = f"Rate limit reached for tokens per minute: limit {int(tpm)}, used {int(used_tokens)}."
    if over:
        raise RateLimited(over, headers={"retry-after": str(reset_s),
                                         **{k.decode(): v.decode() for k, v in headers}})
    for name, used in (("usd_per_day", usd_day), ("usd_per_month", usd_month)):
        if lim.get(name) and used >= lim[name]:
            raise RateLimited(f"You exceeded your budget of ${lim[name]} ({name}).",
                              code="insufficient_quota",
                              headers={"retry-after": "3600" if name == "usd_per_day" else "86400"})
    return headers


class Limiter(Protocol):
    async def admit(self, p: Principal) -> Headers: ...

    async def spend(self, p: Principal, tokens: int, usd: float) -> None: ...


class MemoryLimiter:
    def __init__(self) -> None:
        self.minute: dict[str, tuple[int, int, float]] = {}  # key -> (minute, requests, tokens)
        self.usd: dict[tuple[str, str], float] = {}  # (key, day or month) -> USD

    async def admit(self, p: Principal) -> Headers:
        key = p.key_id or "anonymous"
        minute, day, month, reset = _windows(time.time())
        m, reqs, toks = self.minute.get(key, (minute, 0, 0.0))
        if m != minute:
            reqs, toks = 0, 0.0
        reqs += 1
        self.minute[key] = (minute, reqs, toks)
        return _decide(p, reqs, toks, self.usd.get((key, day), 0.0), self.usd.get((key, month), 0.0),
                       reset)

    async def spend(self, p: Principal, tokens: int, usd: float) -> None:
        key = p.key_id or "anonymous"
        minute, day, month, _ = _windows(time.time())
        m, reqs, toks = self.minute.get(key, (minute, 0, 0.0))
        self.minute[key] = (minute, reqs if m == minute else 0, (toks if m == minute else 0) + tokens)
        if usd:
            for window in (day, month):
                self.usd[(key, window)] = self.usd.get((key, window), 0.0) + usd


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "tuneloop:rl") -> None:
        import redis.asyncio as redis

        self.redis: Any = redis.from_url(url)
        self.prefix = prefix

    def _keys(self, p: Principal) -> tuple[str, str, str, str, int]:
        key = p.key_id or "anonymous"
        minute, day, month, reset = _windows(time.time())
        base = f"{self.prefix}:{key}"
        return f"{base}:r:{minute}", f"{base}:t:{minute}", f"{base}:usd:{day}", f"{base}:usd:{month}", reset

    async def admit(self, p: Principal) -> Headers:
        rk, tk, dk, mk, reset = self._keys(p)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(rk)
        pipe.expire(rk, 120)
        pipe.get(tk)
        pipe.get(dk)
        pipe.get(mk)
        reqs, _, toks, usd_day, usd_month = await pipe.execute()
        return _decide(p, int(reqs), float(toks or 0), float(usd_day or 0), float(usd_month or 0), reset)

    async def spend(self, p: Principal, tokens: int, usd: float) -> None:
        _, tk, dk, mk, _ = self._keys(p)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(tk, tokens)
        pipe.expire(tk, 120)
        if usd:
            pipe.incrbyfloat(dk, usd)
            pipe.expire(dk, 2 * 86400)
            pipe.incrbyfloat(mk, usd)
            pipe.expire(mk, 32 * 86400)
        await pipe.execute()

    async def aclose(self) -> None:
        await self.redis.aclose()
