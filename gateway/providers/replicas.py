"""A target's replicas: least in-flight choice, a circuit breaker each, and (for vLLM)
which adapters each one holds.

``pick`` skips replicas whose breaker is open without waiting; when every breaker is open
the request fails at once with 503. Which faults count is ``gateway.resilience``'s rule;
``record`` applies it to a translated error. Messages name the target, never a URL.
"""

from __future__ import annotations

import itertools
import time

from gateway.config import TargetConfig
from gateway.errors import GatewayError, UpstreamClientError, UpstreamUnavailable
from gateway.resilience import CircuitBreaker

HOLDINGS_TTL_S = 5.0


class Replicas:
    def __init__(self, target: str, cfg: TargetConfig) -> None:
        self.target = target
        self.urls = cfg.base_urls
        self.in_flight = dict.fromkeys(self.urls, 0)
        self.breakers = {u: CircuitBreaker(cfg.breaker_failures, cfg.breaker_cooldown_s) for u in self.urls}
        self.holdings: dict[str, set[str]] = {}  # url -> model/adapter names it serves
        self.holdings_at = 0.0
        self._rotation = itertools.cycle(range(len(self.urls)))

    def holdings_stale(self) -> bool:
        return time.monotonic() - self.holdings_at > HOLDINGS_TTL_S

    def set_holdings(self, holdings: dict[str, set[str]]) -> None:
        self.holdings = holdings
        self.holdings_at = time.monotonic()

    def pick(self, prefer: str | None = None, exclude: tuple[str, ...] = ()) -> str:
        """The least busy replica whose breaker allows a request (holders of ``prefer`` first)."""
        if len(self.urls) == 1 and not exclude:
            url = self.urls[0]
            if not self.breakers[url].allow():
                raise UpstreamUnavailable(f"target {self.target!r}: circuit open")
            return url
        start = next(self._rotation)
        order = sorted(self.urls[start:] + self.urls[:start], key=self.in_flight.__getitem__)
        if prefer is not None:
            order.sort(key=lambda u: prefer not in self.holdings.get(u, ()))  # stable: keeps load order
        for url in order:
            if url not in exclude and self.breakers[url].allow():
                return url
        raise UpstreamUnavailable(f"target {self.target!r}: every replica's circuit is open")

    def holder(self, model: str) -> bool:
        return any(model in names for names in self.holdings.values())

    def succeeded(self, url: str) -> None:
        self.breakers[url].success()

    def failed(self, url: str, tenant: str | None = None, *, suspect: bool = False) -> None:
        self.breakers[url].failure(tenant, suspect=suspect)

    def released(self, url: str) -> None:
        self.breakers[url].release()

    def record(self, url: str, err: GatewayError, tenant: str | None) -> None:
        """An upstream 4xx is a success (the replica answered); any other error a fault."""
        if isinstance(err, UpstreamClientError):
            self.succeeded(url)
        else:
            self.failed(url, tenant, suspect=getattr(err, "request_suspect", False))

    def all_open(self) -> bool:
        """Every replica's breaker open (cooling down): nothing would be sent now."""
        return all(b.is_open() for b in self.breakers.values())
