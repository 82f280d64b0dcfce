"""Per-key limits shared by every replica through Redis (see ``gateway.ratelimit``).

Admission is one Lua script, so check-and-reserve is atomic across replicas: it reads the
key's counters, applies the same rules as ``ratelimit.over`` (same order), and reserves only
if all of them hold. Settling is one pipelined round trip of increments (the difference
between what was reserved and what was used) and the slot's removal. Concurrency slots are
a sorted set scored by lease expiry, so a replica that dies mid-request frees its slots
when their lease ends.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.auth import Principal
from gateway.ratelimit import (
    Ask,
    Reservation,
    Usage,
    headers,
    key_of,
    new_slot,
    refusal,
    windows,
)

# KEYS: requests, tokens (this minute), usd (this day), usd (this month), slots (zset)
# ARGV: rpm, tpm, max_concurrency, usd_per_day, usd_per_month (0 = none), ask tokens, ask usd,
#       now, lease expiry, slot id ("" = none), epsilon
ADMIT = """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local uday, umonth = tonumber(ARGV[4]), tonumber(ARGV[5])
local at, au, eps = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[11])
local reqs = tonumber(redis.call('GET', KEYS[1]) or '0')
local toks = tonumber(redis.call('GET', KEYS[2]) or '0')
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local month = tonumber(redis.call('GET', KEYS[4]) or '0')
local inflight = 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[8])
  inflight = redis.call('ZCARD', KEYS[5])
end
local over = ''
if rpm > 0 and reqs + 1 > rpm then over = 'rpm'
elseif tpm > 0 and toks + at > tpm then over = 'tpm'
elseif conc > 0 and inflight + 1 > conc then over = 'max_concurrency'
elseif uday > 0 and day + au > uday + eps then over = 'usd_per_day'
elseif umonth > 0 and month + au > umonth + eps then over = 'usd_per_month'
end
if over == '' then
  reqs = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
  toks = redis.call('INCRBY', KEYS[2], at)
  redis.call('EXPIRE', KEYS[2], 120)
  if au > 0 then
    day = tonumber(redis.call('INCRBYFLOAT', KEYS[3], ARGV[7]))
    redis.call('EXPIRE', KEYS[3], 2 * 86400)
    month = tonumber(redis.call('INCRBYFLOAT', KEYS[4], ARGV[7]))
    redis.call('EXPIRE', KEYS[4], 32 * 86400)
  end
  if ARGV[10] ~= '' then
    redis.call('ZADD', KEYS[5], ARGV[9], ARGV[10])
    redis.call('EXPIRE', KEYS[5], math.ceil(tonumber(ARGV[9]) - tonumber(ARGV[8])) + 60)
    inflight = inflight + 1
  end
end
return {over, tostring(reqs), tostring(toks), tostring(day), tostring(month), inflight}
"""


TIMEOUT_S = 0.5  # connect and each reply: a hung Redis costs a request this long, not minutes


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "tuneloop:rl", timeout_s: float = TIMEOUT_S) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries of its own: gateway.limits_failover decides what a failure means.
        self.redis: Any = redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                         retry=Retry(NoBackoff(), 0))
        self.prefix = prefix
        self.admit_script = self.redis.register_script(ADMIT)

    def _keys(self, key: str, minute: int, day: str, month: str) -> list[str]:
        base = f"{self.prefix}:{key}"
        return [f"{base}:r:{minute}", f"{base}:t:{minute}", f"{base}:usd:{day}", f"{base}:usd:{month}",
                f"{base}:slots"]

    async def admit(self, p: Principal, ask: Ask) -> Reservation:
        key, now = key_of(p), time.time()
        minute, day, month, reset = windows(now)
        lim = p.limits
        slot = new_slot(p)
        args: list[float | int | str] = [
            lim.get(n) or 0 for n in ("rpm", "tpm", "max_concurrency", "usd_per_day", "usd_per_month")]
        args += [ask.tokens, repr(ask.usd), repr(now), repr(now + ask.lease_s), slot or "", 1e-12]
        kind, reqs, toks, usd_day, usd_month, inflight = await self.admit_script(
            keys=self._keys(key, minute, day, month), args=args)
        u = Usage(int(reqs), float(toks), float(usd_day), float(usd_month), int(inflight))
        if kind:
            raise refusal(lim, kind.decode(), u, ask, now)
        return Reservation(key, ask, minute, day, month, slot, headers(lim, u, reset))

    async def settle(self, res: Reservation, tokens: int, usd: float) -> None:
        _, tk, dk, mk, sk = self._keys(res.key, res.minute, res.day, res.month)
        pipe = self.redis.pipeline(transaction=False)
        if tokens != res.ask.tokens:
            pipe.incrby(tk, tokens - res.ask.tokens)
            pipe.expire(tk, 120)
        if usd != res.ask.usd:
            pipe.incrbyfloat(dk, usd - res.ask.usd)
            pipe.expire(dk, 2 * 86400)
            pipe.incrbyfloat(mk, usd - res.ask.usd)
            pipe.expire(mk, 32 * 86400)
        if res.slot:
            pipe.zrem(sk, res.slot)
        if len(pipe):
            await pipe.execute()

    async def aclose(self) -> None:
        await self.redis.aclose()
