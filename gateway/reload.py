"""Live route changes: the config file is watched and the routing table swapped in place.

In-flight requests keep the router they started with; new requests see the new one. A
target whose settings did not change keeps its provider (connection pools, breakers); a
replaced provider is closed only after its requests have had ``timeout_s`` to finish.
A config that fails validation is logged and ignored: the old table stays.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.providers import Provider, make_provider
from gateway.router import Router

log = logging.getLogger(__name__)


def rebuild(routes: Any, config: GatewayConfig) -> list[Provider]:
    """Swap ``routes`` to ``config``; returns the providers that are no longer used."""
    old_router: Router = routes.router
    providers: dict[str, Provider] = {}
    for name, target in config.targets.items():
        current = old_router.providers.get(name)
        same = current is not None and current.cfg == target
        providers[name] = current if same else make_provider(name, target)  # type: ignore[assignment]
    kept = {id(p) for p in providers.values()}
    retired = [p for p in old_router.providers.values() if id(p) not in kept]
    routes.router = Router(config, providers)
    routes.config = config
    return retired


async def watch_config(routes: Any, path: Path, interval_s: float = 1.0) -> None:
    """Poll ``path``'s modification time; reload on change. Runs until cancelled."""
    last = path.stat().st_mtime_ns if path.exists() else 0
    while True:
        await asyncio.sleep(interval_s)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        if mtime == last:
            continue
        last = mtime
        try:
            config = GatewayConfig.load(path)
        except Exception as exc:  # a bad edit must not take routing down
            log.error("config %s is invalid, keeping the current routes: %s", path, exc)
            continue
        retired = rebuild(routes, config)
        log.info("routes reloaded from %s (%d models)", path, len(config.models))
        for provider in retired:
            asyncio.get_running_loop().call_later(
                provider.cfg.timeout_s + 1, lambda p=provider: asyncio.ensure_future(p.aclose()))
