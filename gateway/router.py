"""Where a request goes: alias -> one weighted route, then the fallbacks' routes.

A route is chosen by weight; when the request names an end user (``user``, or the
``x-tuneloop-user`` header) the choice is a stable hash of user and alias, so one user
always sees the same canary arm. Fallback aliases are tried in order, each choosing its
own route the same way.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from gateway.config import GatewayConfig, ModelConfig
from gateway.errors import ModelNotFound
from gateway.providers import Provider, make_provider


@dataclass(slots=True, frozen=True)
class Attempt:
    alias: str
    target: str
    model: str  # the upstream's model / adapter name
    provider: Provider
    arm: str | None  # "target/model" when the alias has more than one route
    lora_path: str | None = None
    retries: int = 0
    retry_budget_s: float = 30.0


class _Alias:
    __slots__ = ("name", "routes", "cumulative", "total", "fallbacks", "cfg")

    def __init__(self, name: str, cfg: ModelConfig) -> None:
        routes = [(r.target, r.model, r.weight) for r in cfg.routes if r.weight > 0] or [
            (cfg.routes[0].target, cfg.routes[0].model, 1.0)]
        self.name = name
        self.cfg = cfg
        self.routes = routes
        self.total = sum(w for _, _, w in routes)
        acc, self.cumulative = 0.0, []
        for _, _, w in routes:
            acc += w
            self.cumulative.append(acc)
        self.fallbacks = cfg.fallbacks

    def pick(self, user: str | None) -> tuple[str, str, str | None]:
        if len(self.routes) == 1:
            target, model, _ = self.routes[0]
            return target, model, None
        if user:
            digest = hashlib.blake2b(f"{self.name}\x00{user}".encode(), digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2**64
        else:
            u = random.random()
        i = min(bisect.bisect_right(self.cumulative, u * self.total), len(self.routes) - 1)
        target, model, _ = self.routes[i]
        return target, model, f"{target}/{model}"


class Router:
    def __init__(self, config: GatewayConfig, providers: dict[str, Provider] | None = None) -> None:
        self.config = config
        self.providers = providers if providers is not None else {
            name: make_provider(name, t) for name, t in config.targets.items()}
        self.aliases = {name: _Alias(name, m) for name, m in config.models.items()}
        self.lora_paths = {(r.target, r.model): r.lora_path for m in config.models.values()
                           for r in m.routes if r.lora_path}

    def __contains__(self, model: str) -> bool:
        return model in self.aliases

    def redacts(self, model: str) -> bool:
        alias = self.aliases.get(model)
        return alias is not None and alias.cfg.redact_pii

    def plan(self, model: str, user: str | None = None) -> list[Attempt]:
        alias = self.aliases.get(model)
        if alias is None:
            raise ModelNotFound(model)
        attempts: list[Attempt] = []
        seen: set[str] = set()
        queue = [alias]
        while queue:
            a = queue.pop(0)
            if a.name in seen:
                continue
            seen.add(a.name)
            target, upstream_model, arm = a.pick(user)
            attempts.append(Attempt(a.name, target, upstream_model, self.providers[target], arm,
                                    self.lora_paths.get((target, upstream_model)), a.cfg.retries,
                                    a.cfg.retry_budget_s))
            queue.extend(self.aliases[f] for f in a.fallbacks)
        return attempts

    def targets_of(self, model: str) -> set[str]:
        """Every target a plan for ``model`` may reach: each route of the alias (canary arms
        included) and of its fallbacks, transitively; empty for an unknown alias."""
        targets: set[str] = set()
        seen: set[str] = set()
        queue = [model]
        while queue:
            alias = self.aliases.get(queue.pop())
            if alias is None or alias.name in seen:
                continue
            seen.add(alias.name)
            targets.update(target for target, _, _ in alias.routes)
            queue.extend(alias.fallbacks)
        return targets

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
